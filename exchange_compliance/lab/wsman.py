"""WS-Management as a Windows Server answers it for the Windows Remote Shell (the `cmd` resource URI).

ShellHost takes SOAP envelopes in and gives SOAP envelopes out, driving the shell lifecycle pywinrm uses
(Create, Command, Receive, Send, Signal, Delete) with Windows' namespaces, actions, selector and fault shapes.
What a command prints comes from a callback: this module knows nothing of the lab's scenario. The HTTP and
authentication side is lab/winrm_http.py.
"""

from __future__ import annotations

import base64
import codecs
import logging
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

log = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_RESOURCE = f"{SHELL_URI}/cmd"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = f"{SHELL_URI}/Command"
ACTION_RECEIVE = f"{SHELL_URI}/Receive"
ACTION_SEND = f"{SHELL_URI}/Send"
ACTION_SIGNAL = f"{SHELL_URI}/Signal"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
STATE_DONE = f"{SHELL_URI}/CommandState/Done"
STATE_RUNNING = f"{SHELL_URI}/CommandState/Running"
DEFAULT_MAX_ENVELOPE = 153600
# WinRS hands output over in pieces as the process writes it; clients must join the Stream elements.
STREAM_CHUNK = 4096
# Windows' WSManFault codes for the faults the lab raises.
ERROR_SHELL_NOT_FOUND = 2150858843
ERROR_ACTION_NOT_SUPPORTED = 2150858771
ERROR_RESOURCE_NOT_FOUND = 2150858778
ERROR_ACCESS_DENIED = 5
ERROR_FILE_NOT_FOUND = 2
ERROR_SHELL_QUOTA = 2150859173  # ERROR_WSMAN_QUOTA_MAX_SHELLS
ERROR_OPERATION_TIMEOUT = 2150858793  # ERROR_WSMAN_OPERATION_TIMEDOUT: what pywinrm retries a Receive on
OPERATION_TIMED_OUT = (
    "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
)
# winrm/config MaxTimeoutms: how long a Receive waits when the request names no OperationTimeout.
MAX_TIMEOUT = 60.0
# WinRM's defaults (winrm/config/winrs): a user may hold 30 shells; an idle shell is dropped after two hours.
MAX_SHELLS_PER_USER = 30
SHELL_IDLE_TIMEOUT = 7200.0


class CommandResult(NamedTuple):
    stdout: str
    stderr: str
    exit_code: int
    seconds: float = 0.0  # how long the process runs: its output and exit code are there only then


# (command line, skip_cmd_shell) -> what the process printed and its exit code; None: CreateProcess failed.
CommandRunner = Callable[[str, bool], CommandResult | None]


class WsmanFault(Exception):
    def __init__(self, subcode: str, reason: str, code: int, message: str | None = None, sender: bool = True):
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.code = code
        self.message = message or reason
        self.sender = sender


@dataclass
class _Command:
    command_id: str
    pending: dict[str, bytes]
    exit_code: int
    done_at: float  # time.monotonic() when the process ends


@dataclass
class _Shell:
    shell_id: str
    owner: str
    client_ip: str
    codepage: int
    input_streams: str
    output_streams: str
    commands: dict[str, _Command] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Request:
    action: str
    message_id: str
    resource_uri: str
    shell_id: str | None
    options: dict[str, str]
    max_envelope: int
    body: ET.Element | None
    operation_timeout: float = MAX_TIMEOUT


class ShellHost:
    """The shells of one server; thread-safe (a client may use several connections)."""

    def __init__(self, machine: str, endpoint_url: str, run: CommandRunner) -> None:
        self.machine = machine
        self.endpoint_url = endpoint_url
        self.run = run
        self._shells: dict[str, _Shell] = {}
        self._lock = threading.Lock()
        # A Receive waiting for its command gives the lock up meanwhile; a Signal or Delete wakes it.
        self._changed = threading.Condition(self._lock)

    @property
    def shell_count(self) -> int:
        return len(self._shells)

    def handle(self, envelope: bytes, user: str, client_ip: str) -> tuple[int, bytes]:
        """One WS-Man request: (HTTP status, SOAP envelope). Faults answer 500, as WinRM does."""
        message_id = ""
        try:
            request = parse_request(envelope)
            message_id = request.message_id
            if request.resource_uri.lower() != CMD_RESOURCE:
                raise WsmanFault(
                    "w:DestinationUnreachable",
                    "The WS-Management service cannot process the request. The resource URI "
                    f"({request.resource_uri}) was not found in the WS-Management catalog.",
                    ERROR_RESOURCE_NOT_FOUND,
                )
            with self._lock:
                action, body = self._dispatch(request, user, client_ip)
            return 200, envelope_xml(action, request.message_id, body)
        except WsmanFault as fault:
            return 500, fault_xml(fault, message_id, self.machine)
        except Exception as exc:  # a lab bug must still answer as a server fault, not drop the connection
            log.exception("%s: request failed", self.machine)
            fault = WsmanFault("w:InternalError", f"The WS-Management service failed: {exc}", 1359, sender=False)
            return 500, fault_xml(fault, message_id, self.machine)

    def _dispatch(self, request: Request, user: str, client_ip: str) -> tuple[str, str]:
        if request.action == ACTION_CREATE:
            return f"{ACTION_CREATE}Response", self._create(request, user, client_ip)
        if request.action not in (ACTION_COMMAND, ACTION_RECEIVE, ACTION_SEND, ACTION_SIGNAL, ACTION_DELETE):
            raise WsmanFault(
                "a:ActionNotSupported",
                f"The action is not supported by the service: {request.action}",
                ERROR_ACTION_NOT_SUPPORTED,
            )
        shell = self._shell(request, user)
        if request.action == ACTION_DELETE:
            del self._shells[shell.shell_id]
            self._changed.notify_all()
            return f"{ACTION_DELETE}Response", ""
        if request.action == ACTION_COMMAND:
            return f"{ACTION_COMMAND}Response", self._command(request, shell)
        if request.action == ACTION_RECEIVE:
            return f"{ACTION_RECEIVE}Response", self._receive(request, shell)
        if request.action == ACTION_SEND:
            return f"{ACTION_SEND}Response", "<rsp:SendResponse/>"
        signal = _child(request.body, "rsp:Signal")
        shell.commands.pop(signal.get("CommandId", "").upper() if signal is not None else "", None)
        self._changed.notify_all()
        return f"{ACTION_SIGNAL}Response", "<rsp:SignalResponse/>"

    def _create(self, request: Request, user: str, client_ip: str) -> str:
        spec = _child(request.body, "rsp:Shell")
        try:
            codepage = int(request.options.get("WINRS_CODEPAGE", "437"))
        except ValueError:
            codepage = 437
        now = time.monotonic()
        for stale in [s for s in self._shells.values() if now - s.last_used > SHELL_IDLE_TIMEOUT]:
            del self._shells[stale.shell_id]
        # A client that never deletes its shells runs into the quota, as it would on Windows.
        if sum(s.owner.lower() == user.lower() for s in self._shells.values()) >= MAX_SHELLS_PER_USER:
            raise WsmanFault(
                "w:InternalError",
                "The WS-Management service cannot process the request. This user is allowed a maximum number of "
                f"{MAX_SHELLS_PER_USER} concurrent shells, which has been exceeded. Close existing shells or raise "
                "the quota for this user. ",
                ERROR_SHELL_QUOTA,
                sender=False,
            )
        shell = _Shell(
            shell_id=str(uuid.uuid4()).upper(),
            owner=user,
            client_ip=client_ip,
            codepage=codepage,
            input_streams=_text(spec, "rsp:InputStreams") or "stdin",
            output_streams=_text(spec, "rsp:OutputStreams") or "stdout stderr",
        )
        self._shells[shell.shell_id] = shell
        return (
            "<x:ResourceCreated>"
            f"<a:Address>{escape(self.endpoint_url)}</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{CMD_RESOURCE}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            f'<rsp:Shell xmlns:rsp="{SHELL_URI}">'
            f"<rsp:ShellId>{shell.shell_id}</rsp:ShellId><rsp:ResourceUri>{CMD_RESOURCE}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(user)}</rsp:Owner><rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{escape(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{escape(shell.output_streams)}</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
            "</rsp:Shell>"
        )

    def _command(self, request: Request, shell: _Shell) -> str:
        line = _child(request.body, "rsp:CommandLine")
        if line is None:
            raise WsmanFault("w:InvalidParameter", "The Command request has no CommandLine.", 87)
        parts = [(_text(line, "rsp:Command") or "").strip()]
        parts += [(a.text or "") for a in line.findall("rsp:Arguments", NS)]
        command_line = " ".join(p for p in parts if p)
        skip_cmd = request.options.get("WINRS_SKIP_CMD_SHELL", "FALSE").upper() == "TRUE"
        result = self.run(command_line, skip_cmd)
        if result is None:
            raise WsmanFault(
                "w:InternalError", "The system cannot find the file specified. ", ERROR_FILE_NOT_FOUND, sender=False
            )
        command_id = (line.get("CommandId") or str(uuid.uuid4())).upper()
        encoding = _codec(shell.codepage)
        shell.commands[command_id] = _Command(
            command_id=command_id,
            pending={
                "stdout": result.stdout.encode(encoding, errors="replace"),
                "stderr": result.stderr.encode(encoding, errors="replace"),
            },
            exit_code=result.exit_code,
            done_at=time.monotonic() + result.seconds,
        )
        return f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"

    def _receive(self, request: Request, shell: _Shell) -> str:
        desired = _child(_child(request.body, "rsp:Receive"), "rsp:DesiredStream")
        command_id = (desired.get("CommandId") if desired is not None else None) or ""
        command = self._command_of(shell, command_id)
        # WinRS answers a Receive once the process has written output or ended; until then it holds the request,
        # and past the request's OperationTimeout it answers with a fault that tells the client to ask again.
        give_up = time.monotonic() + request.operation_timeout
        while (now := time.monotonic()) < command.done_at:
            if now >= give_up:
                raise WsmanFault("w:TimedOut", OPERATION_TIMED_OUT, ERROR_OPERATION_TIMEOUT, sender=False)
            self._changed.wait(min(command.done_at, give_up) - now)
            command = self._command_of(shell, command_id)  # a Signal or Delete may have ended it meanwhile
        # Stay under the client's MaxEnvelopeSize: what does not fit waits for the next Receive.
        budget, parts = max(4096, request.max_envelope - 2048), []
        for stream in ("stdout", "stderr"):
            data = command.pending[stream]
            while data:
                piece = data[:STREAM_CHUNK]
                encoded = base64.b64encode(piece).decode("ascii")
                cost = len(encoded) + 160
                if cost > budget:
                    break
                budget -= cost
                parts.append(f'<rsp:Stream Name="{stream}" CommandId="{command.command_id}">{encoded}</rsp:Stream>')
                data = data[len(piece) :]
            command.pending[stream] = data
        cid = command.command_id
        if any(command.pending.values()):
            parts.append(f'<rsp:CommandState CommandId="{cid}" State="{STATE_RUNNING}"/>')
        else:
            ends = [f'<rsp:Stream Name="{s}" CommandId="{cid}" End="true"></rsp:Stream>' for s in ("stdout", "stderr")]
            parts += ends
            parts.append(
                f'<rsp:CommandState CommandId="{cid}" State="{STATE_DONE}">'
                f"<rsp:ExitCode>{command.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        return "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>"

    def _command_of(self, shell: _Shell, command_id: str) -> _Command:
        command = shell.commands.get(command_id.upper()) if self._shells.get(shell.shell_id) is shell else None
        if command is None:
            raise WsmanFault(
                "w:InvalidParameter",
                f"The request for the Windows Remote Shell with CommandId {command_id} failed because the command "
                "was not found.",
                ERROR_SHELL_NOT_FOUND,
            )
        return command

    def _shell(self, request: Request, user: str) -> _Shell:
        shell = self._shells.get((request.shell_id or "").upper())
        if shell is None:
            raise WsmanFault(
                "w:InvalidSelectors",
                "The WS-Management service cannot process the request because the request contained invalid "
                "selectors for the resource. ",
                ERROR_SHELL_NOT_FOUND,
                f"The request for the Windows Remote Shell with ShellId {request.shell_id} failed because the shell "
                "was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no "
                "longer exists on the server. Provide the correct ShellId or create a new shell and retry the "
                "operation. ",
            )
        if shell.owner.lower() != user.lower():
            raise WsmanFault("w:AccessDenied", "Access is denied. ", ERROR_ACCESS_DENIED)
        shell.last_used = time.monotonic()
        return shell


def parse_request(envelope: bytes) -> Request:
    try:
        root = ET.fromstring(envelope)
    except ET.ParseError as exc:
        raise WsmanFault(
            "w:SchemaValidationError", f"The SOAP XML in the message is not valid: {exc}", 2150858817
        ) from None
    header = root.find("s:Header", NS)
    if root.tag != f"{{{NS['s']}}}Envelope" or header is None:
        raise WsmanFault("w:SchemaValidationError", "The message is not a SOAP 1.2 envelope.", 2150858817)
    selector = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS)
    options = {o.get("Name", ""): (o.text or "") for o in header.findall("w:OptionSet/w:Option", NS)}
    try:
        max_envelope = int(_text(header, "w:MaxEnvelopeSize") or DEFAULT_MAX_ENVELOPE)
    except ValueError:
        max_envelope = DEFAULT_MAX_ENVELOPE
    body = root.find("s:Body", NS)
    return Request(
        action=(_text(header, "a:Action") or "").strip(),
        message_id=(_text(header, "a:MessageID") or "").strip(),
        resource_uri=(_text(header, "w:ResourceURI") or "").strip(),
        shell_id=selector.text.strip() if selector is not None and selector.text else None,
        options=options,
        max_envelope=max_envelope,
        body=body,
        operation_timeout=_seconds(_text(header, "w:OperationTimeout")),
    )


def envelope_xml(action: str, relates_to: str, body: str) -> bytes:
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}" '
        f'xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}" xmlns:p="{NS["p"]}">'
        f"<s:Header><a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To><a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault_xml(fault: WsmanFault, relates_to: str, machine: str) -> bytes:
    body = (
        f"<s:Fault><s:Code><s:Value>{'s:Sender' if fault.sender else 's:Receiver'}</s:Value>"
        f"<s:Subcode><s:Value>{escape(fault.subcode)}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault xmlns:f="{NS["f"]}" Code="{fault.code}" Machine={quoteattr(machine)}>'
        f"<f:Message>{escape(fault.message)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    return envelope_xml(ACTION_FAULT, relates_to, body)


def _seconds(duration: str | None) -> float:
    """An xs:duration as WS-Man clients send OperationTimeout ("PT20S", "PT20.000S", "PT1M30S"); MaxTimeoutms
    when there is none or it cannot be read."""
    found = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?", (duration or "").strip())
    if not found or not any(found.groups()):
        return MAX_TIMEOUT
    hours, minutes, seconds = (float(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def _child(parent: ET.Element | None, path: str) -> ET.Element | None:
    return parent.find(path, NS) if parent is not None else None


def _text(parent: ET.Element | None, path: str) -> str | None:
    node = _child(parent, path)
    return node.text if node is not None else None


def _codec(codepage: int) -> str:
    # The shell's WINRS_CODEPAGE is the console output code page: 437 (what pywinrm asks for), 65001 is UTF-8.
    if codepage == 65001:
        return "utf-8"
    try:
        return codecs.lookup(f"cp{codepage}").name
    except LookupError:
        return "cp437"
