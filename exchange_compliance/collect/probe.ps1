# exchange-compliance server probe: reads, never writes. Windows PowerShell 5.1. Prints one JSON document.
# Each key is described once, in probe_fields.py. Only values Windows writes alike in every display language
# are read (registry, IIS configuration, certificate properties, round-trip dates), never labels or messages.
$ErrorActionPreference = 'Stop'
function U($d) { if ($d) { $d.ToUniversalTime().ToString('o') } }
function H($b) { if ($b) { [BitConverter]::ToString($b) -replace '-' } }
try {
  $o = [ordered]@{ probe = 1; computer = $env:COMPUTERNAME }
  $o.boot = U (Get-CimInstance Win32_OperatingSystem).LastBootUpTime
  $o.certificates = @(Get-ChildItem Cert:\LocalMachine\My | ForEach-Object {
    [ordered]@{ thumbprint = $_.Thumbprint; subject = $_.Subject; issuer = $_.Issuer
      dns = @($_.DnsNameList | ForEach-Object { $_.Unicode }); notBefore = U $_.NotBefore
      notAfter = U $_.NotAfter; privateKey = $_.HasPrivateKey; friendlyName = $_.FriendlyName
      raw = [Convert]::ToBase64String($_.RawData) } })
  $o.bindings = @()
  # Edge Transport servers have no IIS: no sites, no bindings, not an error.
  if (Get-Module -ListAvailable WebAdministration) {
    Import-Module WebAdministration
    $o.bindings = @(foreach ($s in 'Exchange Back End', 'Default Web Site') {
      Get-WebBinding -Name $s | ForEach-Object {
        [ordered]@{ site = $s; protocol = $_.protocol; info = $_.bindingInformation
          hash = $_.certificateHash; store = $_.certificateStoreName } } })
  }
  # http.sys's SSL bindings on 443 and 444 where http.sys keeps them (netsh shows them with translated labels).
  $p = 'HKLM:\SYSTEM\CurrentControlSet\Services\HTTP\Parameters\'
  $o.http = @(foreach ($t in 'SslBindingInfo', 'SslSniBindingInfo', 'SslCcsBindingInfo') {
    if (Test-Path "$p$t") { Get-ChildItem "$p$t" | ForEach-Object {
      $k = $_.GetValue('HostnamePort'); if (!$k) { $k = $_.PSChildName }
      if ("$k" -match '(^|:)44[34]$') { [ordered]@{ table = $t; key = "$k"; hash = H $_.GetValue('SslCertHash')
        appId = H $_.GetValue('AppId'); store = $_.GetValue('SslCertStoreName') } } } } })
} catch { $o = [ordered]@{ probe = 1; error = "$_" } }
# ASCII only, so no console code page can change a character: the others as JSON \u escapes.
[regex]::Replace(($o | ConvertTo-Json -Depth 6 -Compress), '[^\x00-\x7F]', { '\u{0:x4}' -f [int][char]$args[0].Value })
