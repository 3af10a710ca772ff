"""Schemathesis hooks for tmi-server's contract test: dev-provider sign-in (PKCE) for the main user, and a fresh
throw-away user for each request of the operations that end a session (logout, revoke), so that they cannot
sign the main user out in the middle of the run."""
import base64
import hashlib
import json
import os
import secrets
import urllib.parse
import urllib.request

import schemathesis

BASE = os.environ["TMI_CONTRACT_BASE"]
CALLBACK = "http://localhost:8079/"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def dev_login(user):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "idp": "tmi", "scope": "openid", "login_hint": user, "state": "contract",
        "client_callback": CALLBACK, "code_challenge": challenge, "code_challenge_method": "S256",
    })
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(f"{BASE}/oauth2/authorize?{query}")
        raise RuntimeError("dev login: no redirect")
    except urllib.error.HTTPError as e:
        location = e.headers["Location"]
    code = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)["code"][0]
    body = json.dumps({"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                       "redirect_uri": CALLBACK}).encode()
    req = urllib.request.Request(f"{BASE}/oauth2/token?idp=tmi", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as res:
        return json.load(res)["access_token"]


SESSION_ENDING = [("POST", "/me/logout"), ("POST", "/oauth2/revoke")]


@schemathesis.auth(refresh_interval=None).apply_to(
    method=[m for m, _ in SESSION_ENDING], path=[p for _, p in SESSION_ENDING])
class ThrowAwayUser:
    def get(self, case, ctx):
        return dev_login("contract-throwaway")

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.auth().skip_for(
    method=[m for m, _ in SESSION_ENDING], path=[p for _, p in SESSION_ENDING])
class MainUser:
    def get(self, case, ctx):
        return dev_login("contract-alice")

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
