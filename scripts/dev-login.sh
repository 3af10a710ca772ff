#!/usr/bin/env bash
# Signs in to a TMI server in development mode through its dev provider (`tmi`), the way the web client does
# it (OAuth 2.0 authorization code with PKCE), and prints the access token. For trying a server from a shell:
#   TOKEN=$(scripts/dev-login.sh http://localhost:8080 alice)
#   curl -H "Authorization: Bearer $TOKEN" http://localhost:8080/threat_models
set -euo pipefail
base=${1:?usage: scripts/dev-login.sh BASE_URL [LOGIN_HINT]}
user=${2:-alice}
read -r verifier challenge < <(python3 -c '
import base64, hashlib, secrets
v = secrets.token_urlsafe(48)
c = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
print(v, c)')
callback=http://localhost:8079/
location=$(curl -sS -o /dev/null -w '%{redirect_url}' \
  "$base/oauth2/authorize?idp=tmi&scope=openid&login_hint=$user&state=cli&client_callback=$callback&code_challenge=$challenge&code_challenge_method=S256")
code=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$location")
[ -n "$code" ] || { echo "dev-login: the server did not redirect with a code (is it in development mode?)" >&2; exit 1; }
curl -fsS -H 'Content-Type: application/json' \
  -d "{\"grant_type\":\"authorization_code\",\"code\":\"$code\",\"code_verifier\":\"$verifier\",\"redirect_uri\":\"$callback\"}" \
  "$base/oauth2/token?idp=tmi" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
