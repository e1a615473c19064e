"""Servers in any language: what a German or French Exchange server reports reaches the judges intact.

The probe once parsed `netsh http show sslcert`, whose labels Windows translates ("Zertifikathash",
"Hachage du certificat"), so a German or French server got a wrong BE-02 verdict or an error. It now reads
http.sys's bindings from the registry, whose values are the same in every language, and prints ASCII only,
so no console code page (850 on a German server, 437, 1252, UTF-8) changes a character of a certificate's
subject. The servers below answer through the lab's rendering of the probe, as Windows prints it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from factories import NOW, rsa_key, server

from exchange_compliance.collect import probe as probe_module
from exchange_compliance.collect.probe import parse_probe_output
from exchange_compliance.judge.backend import backend_certificate_valid
from exchange_compliance.lab.probe_output import ServerState, StoreEntry, render_probe_output, round_trip

EX01 = server("EX01")  # ex01.lab.contoso.test, Mailbox and Client Access


@dataclass(frozen=True)
class Language:
    name: str
    own: tuple[tuple[x509.ObjectIdentifier, str], ...]  # setup's certificate, with a local organisation
    foreign: tuple[tuple[x509.ObjectIdentifier, str], ...]  # a certificate that does not name the server
    foreign_sans: tuple[str, ...]
    friendly_name: str
    netsh: str  # what `netsh http show sslcert ipport=0.0.0.0:444` printed there, with translated labels


GERMAN = Language(
    "German",
    ((NameOID.LOCALITY_NAME, "München"), (NameOID.ORGANIZATION_NAME, "Müller GmbH"), (NameOID.COMMON_NAME, "EX01")),
    ((NameOID.ORGANIZATION_NAME, "Bäckerei Groß AG"), (NameOID.COMMON_NAME, "Webmail Prüfstelle")),
    ("webmail.bäckerei.example",),
    "Zertifikat für Webmail",
    "\r\nSSL-Zertifikatbindungen:\r\n-------------------------\r\n\r\n"
    "    IP:Port                      : 0.0.0.0:444\r\n"
    "    Zertifikathash               : {hash}\r\n"
    "    Anwendungs-ID                : {{4dc3e181-e14b-4a21-b022-59fc669b0914}}\r\n"
    "    Zertifikatspeichername       : My\r\n\r\n",
)
FRENCH = Language(
    "French",
    ((NameOID.ORGANIZATION_NAME, "Société Générale d'Hébergement"), (NameOID.COMMON_NAME, "EX01")),
    ((NameOID.ORGANIZATION_NAME, "Société Générale"), (NameOID.COMMON_NAME, "Serveur d'échange")),
    ("messagerie.exemple.fr",),
    "Certificat d'échange",
    "\r\nLiaisons de certificat SSL :\r\n-------------------------\r\n\r\n"
    "    IP:port                      : 0.0.0.0:444\r\n"
    "    Hachage du certificat        : {hash}\r\n"
    "    ID de l'application          : {{4dc3e181-e14b-4a21-b022-59fc669b0914}}\r\n"
    "    Nom du magasin de certificats : My\r\n\r\n",
)


def certificate(subject: tuple[tuple[x509.ObjectIdentifier, str], ...], sans: tuple[str, ...]) -> bytes:
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key().public_key())
        .serial_number(1000 + len(sans))
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=1800))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    )
    return builder.sign(rsa_key(), hashes.SHA256()).public_bytes(Encoding.DER)


def entry(der: bytes, friendly_name: str) -> StoreEntry:
    return StoreEntry(der=der, thumbprint=hashlib.sha1(der).hexdigest().upper(), friendly_name=friendly_name)


def localised_server(language: Language, bound: str) -> tuple[ServerState, StoreEntry, StoreEntry]:
    own = entry(certificate(language.own, ("EX01", "ex01.lab.contoso.test")), "Microsoft Exchange")
    # IDNA is not the point here: the SAN is ASCII, the subject and friendly name are not.
    foreign = entry(
        certificate(language.foreign, tuple(n.encode("idna").decode() for n in language.foreign_sans)),
        language.friendly_name,
    )
    backend = own if bound == "own" else foreign
    state = ServerState(
        name="EX01",
        fqdn="ex01.lab.contoso.test",
        address="127.0.10.1",
        version="15.2.1544.4",
        boot=round_trip(NOW - timedelta(days=3)),
        store=(own, foreign),
        backend_thumbprint=backend.thumbprint,
        frontend_thumbprint=foreign.thumbprint,
    )
    return state, own, foreign


@pytest.mark.parametrize("language", [GERMAN, FRENCH], ids=lambda lang: lang.name)
@pytest.mark.parametrize("codepage", ["cp850", "cp437", "cp1252", "utf-8"])
def test_binding_on_a_localised_server_is_judged_right(language: Language, codepage: str) -> None:
    for bound in ("own", "foreign"):
        state, own, foreign = localised_server(language, bound)
        text = render_probe_output(state)
        assert text.isascii()
        # The same bytes whatever the shell's code page: the non-ASCII subject travels as \u escapes.
        stdout = text.encode(codepage)
        assert stdout == text.encode("ascii")
        facts = parse_probe_output(stdout)
        by_thumbprint = {c.thumbprint: c for c in facts.certificates}
        own_subject = ", ".join(f"{_short(oid)}={value}" for oid, value in reversed(language.own))
        assert by_thumbprint[own.thumbprint].subject == own_subject
        assert by_thumbprint[foreign.thumbprint].friendly_name == language.friendly_name
        (http_sys,) = [b for b in facts.ssl_bindings if b.ip_port == "0.0.0.0:444"]
        assert http_sys.certificate_hash == (own if bound == "own" else foreign).thumbprint

        verdict = backend_certificate_valid(EX01, facts, NOW)
        if bound == "own":
            assert verdict.met, verdict.evidence
            assert own_subject.replace(", ", ",") in verdict.evidence.replace(", ", ",")
        else:
            assert not verdict.met
            foreign_cn = dict(language.foreign)[NameOID.COMMON_NAME]
            assert foreign_cn in verdict.evidence and "names neither the host name nor the FQDN" in verdict.evidence
            # The fix binds setup's certificate back, found by the DER, not by any translated text.
            assert f"certhash={own.thumbprint}" in verdict.fix


@pytest.mark.parametrize("language", [GERMAN, FRENCH], ids=lambda lang: lang.name)
def test_translated_netsh_output_cannot_reach_the_judge(language: Language) -> None:
    # The old probe's `netsh` text, here claiming the foreign certificate on 444, is no key the probe reads:
    # the judge sees the registry's binding, which names setup's certificate.
    state, _, foreign = localised_server(language, "own")
    document = json.loads(render_probe_output(state))
    document["netsh"] = {"0.0.0.0:444": language.netsh.format(hash=foreign.thumbprint.lower())}
    with_text = parse_probe_output(json.dumps(document, ensure_ascii=False).encode("utf-8"))
    assert with_text == parse_probe_output(render_probe_output(state))
    assert backend_certificate_valid(EX01, with_text, NOW).met
    assert not any("netsh" in name.lower() for name in vars(probe_module))
    assert "netsh" not in probe_module.probe_script().lower()


def _short(oid: x509.ObjectIdentifier) -> str:
    return {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.LOCALITY_NAME: "L"}[oid]
