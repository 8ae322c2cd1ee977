"""OAuth 1.0a (RFC 5849) test resource server for the plugin's end-to-end tests.

Every signature is verified with oauthlib (python3-oauthlib), an implementation independent of
the plugin's. Credentials are registered by the tests through /test/ endpoints; any other path is
a protected resource that answers 200 with what it verified, or 401 with why it refused.

    python3 server.py        prints "LISTENING http://127.0.0.1:<port>" once it accepts requests

Endpoints:
  POST /test/consumers  {"consumer_key", "consumer_secret", "rsa_public_key"}
  POST /test/tokens     {"consumer_key", "token", "token_secret"}
  POST /oauth/request_token, GET /oauth/authorize, POST /oauth/access_token
                        the three-legged flow (section 2); authorize approves at once and
                        redirects to the oauth_callback with oauth_token and oauth_verifier
  any other             a protected resource

Checks on a protected request: an OAuth Authorization header, oauth_version 1.0 if sent, a known
consumer and token of that consumer, a timestamp within 10 minutes, a nonce never seen with that
timestamp and consumer (§3.3), the signature (§3.4) for its method, and oauth_body_hash (which
oauthlib does not know) against the body when present.
"""
import base64
import hashlib
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from oauthlib.oauth1.rfc5849 import signature

FORM = "application/x-www-form-urlencoded"
MAX_SKEW = 600

lock = threading.Lock()
consumers = {}  # key -> {"secret", "rsa_public_key"}
tokens = {}  # token -> {"consumer_key", "secret"}
nonces = set()
temporary = {}  # temporary credentials -> {"consumer_key", "secret", "callback", "verifier"}


class Req:
    """The request as oauthlib's verify functions read it."""


def verify(method, uri, headers, body, token_store=None):
    """Returns (consumer_key, token, params) or raises ValueError naming the failure. The token
    is looked up in token_store (default: the token credentials); "none" expects no token."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("OAuth "):
        raise ValueError("no OAuth Authorization header")
    form = body if headers.get("Content-Type", "").split(";")[0].strip() == FORM else None
    params = signature.collect_parameters(
        uri_query=urlsplit(uri).query, body=form, headers={"Authorization": auth},
        exclude_oauth_signature=False)
    oauth = dict(p for p in params if p[0].startswith("oauth_"))
    if oauth.get("oauth_version", "1.0") != "1.0":
        raise ValueError("oauth_version must be 1.0")
    for required in ("oauth_consumer_key", "oauth_signature_method", "oauth_signature",
                     "oauth_timestamp", "oauth_nonce"):
        if required not in oauth:
            raise ValueError("missing " + required)
    with lock:
        consumer = consumers.get(oauth["oauth_consumer_key"])
        if token_store == "none":
            token = {"consumer_key": oauth["oauth_consumer_key"], "secret": ""}
        else:
            token = (token_store or tokens).get(oauth.get("oauth_token", ""))
    if consumer is None:
        raise ValueError("unknown consumer")
    if token is None or token["consumer_key"] != oauth["oauth_consumer_key"]:
        raise ValueError("unknown token")
    if abs(time.time() - int(oauth["oauth_timestamp"])) > MAX_SKEW:
        raise ValueError("timestamp out of range")

    r = Req()
    r.uri, r.http_method = uri, method
    r.params = [p for p in params if p[0] != "oauth_signature"]
    r.signature = oauth["oauth_signature"]
    method_name = oauth["oauth_signature_method"]
    if method_name == "HMAC-SHA1":
        ok = signature.verify_hmac_sha1(r, consumer["secret"], token["secret"])
    elif method_name == "HMAC-SHA256":
        ok = signature.verify_hmac_sha256(r, consumer["secret"], token["secret"])
    elif method_name == "RSA-SHA1":
        ok = signature.verify_rsa_sha1(r, consumer["rsa_public_key"])
    elif method_name == "PLAINTEXT":
        ok = signature.verify_plaintext(r, consumer["secret"], token["secret"])
    else:
        raise ValueError("unsupported signature method")
    if not ok:
        raise ValueError("bad signature")

    if "oauth_body_hash" in oauth:
        if form is not None:
            raise ValueError("oauth_body_hash on a form-encoded body")
        digest = hashlib.sha256 if method_name == "HMAC-SHA256" else hashlib.sha1
        if base64.b64encode(digest(body.encode()).digest()).decode() != oauth["oauth_body_hash"]:
            raise ValueError("oauth_body_hash does not match the body")

    seen = (oauth["oauth_consumer_key"], oauth["oauth_timestamp"], oauth["oauth_nonce"])
    with lock:
        if seen in nonces:
            raise ValueError("nonce replayed")
        nonces.add(seen)
    return oauth["oauth_consumer_key"], oauth.get("oauth_token", ""), r.params


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        # One line per request, never headers or bodies.
        sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))
        sys.stdout.flush()

    def answer(self, status, obj):
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def handle_any(self):
        body = self.body()
        if self.command == "POST" and self.path == "/test/consumers":
            c = json.loads(body)
            with lock:
                consumers[c["consumer_key"]] = {
                    "secret": c.get("consumer_secret", ""), "rsa_public_key": c.get("rsa_public_key")}
            return self.answer(200, {})
        if self.command == "POST" and self.path == "/test/tokens":
            t = json.loads(body)
            with lock:
                tokens[t["token"]] = {"consumer_key": t["consumer_key"], "secret": t["token_secret"]}
            return self.answer(200, {})
        uri = "http://%s%s" % (self.headers.get("Host"), self.path)
        if self.path.startswith("/oauth/"):
            return self.three_legged(uri, body)
        try:
            consumer_key, token, params = verify(self.command, uri, self.headers, body)
        except ValueError as err:
            return self.answer(401, {"error": str(err)})
        return self.answer(200, {"consumer_key": consumer_key, "token": token,
                                 "params": [[k, v] for k, v in params if not k.startswith("oauth_")]})

    def three_legged(self, uri, body):
        path = urlsplit(self.path).path
        if self.command == "GET" and path == "/oauth/authorize":
            token = parse_qs(urlsplit(self.path).query).get("oauth_token", [""])[0]
            with lock:
                t = temporary.get(token)
                if t is not None:
                    t["verifier"] = secrets.token_urlsafe(16)
            if t is None:
                return self.answer(400, {"error": "unknown oauth_token"})
            sep = "&" if "?" in t["callback"] else "?"
            self.send_response(302)
            self.send_header("Location", t["callback"] + sep + urlencode(
                {"oauth_token": token, "oauth_verifier": t["verifier"]}))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        try:
            if self.command == "POST" and path == "/oauth/request_token":
                consumer_key, _, params = verify(self.command, uri, self.headers, body, "none")
                callback = dict(params).get("oauth_callback", "")
                if not callback:
                    raise ValueError("oauth_callback is required")
                token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
                with lock:
                    temporary[token] = {"consumer_key": consumer_key, "secret": secret,
                                        "callback": callback, "verifier": ""}
                return self.form({"oauth_token": token, "oauth_token_secret": secret,
                                  "oauth_callback_confirmed": "true"})
            if self.command == "POST" and path == "/oauth/access_token":
                consumer_key, token, params = verify(self.command, uri, self.headers, body, temporary)
                with lock:
                    t = temporary.pop(token)
                    if not t["verifier"] or dict(params).get("oauth_verifier") != t["verifier"]:
                        raise ValueError("bad oauth_verifier")
                    issued, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
                    tokens[issued] = {"consumer_key": consumer_key, "secret": secret}
                return self.form({"oauth_token": issued, "oauth_token_secret": secret})
        except ValueError as err:
            return self.answer(401, {"error": str(err)})
        return self.answer(404, {"error": "no such endpoint"})

    def form(self, values):
        raw = urlencode(values).encode()
        self.send_response(200)
        self.send_header("Content-Type", FORM)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sys.stdout.write("LISTENING http://127.0.0.1:%d\n" % server.server_address[1])
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
