# exchange-compliance server probe: reads, never writes. Windows PowerShell 5.1. Prints one JSON document.
$ErrorActionPreference = 'Stop'
function U($d) { if ($d) { $d.ToUniversalTime().ToString('o') } }
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
  $o.netsh = [ordered]@{}
  foreach ($p in '0.0.0.0:444', '0.0.0.0:443') { $o.netsh[$p] = (netsh http show sslcert ipport=$p | Out-String) }
} catch { $o = [ordered]@{ probe = 1; error = "$_" } }
$o | ConvertTo-Json -Depth 6 -Compress
