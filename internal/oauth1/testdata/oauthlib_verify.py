"""Verifies OAuth 1.0a signatures with oauthlib (an implementation independent of the plugin's).

Reads one JSON case per line on stdin: method, url, body (form-encoded or ""), authorization,
consumer_secret, token_secret, rsa_public_key. Writes one JSON line per case: whether oauthlib
accepts the signature, and the base string oauthlib computes.
"""
import json
import sys
from urllib.parse import urlparse

from oauthlib.oauth1.rfc5849 import signature as s


class Req:
    pass


VERIFY = {
    "HMAC-SHA1": lambda r, c: s.verify_hmac_sha1(r, c["consumer_secret"], c["token_secret"]),
    "HMAC-SHA256": lambda r, c: s.verify_hmac_sha256(r, c["consumer_secret"], c["token_secret"]),
    "RSA-SHA1": lambda r, c: s.verify_rsa_sha1(r, c["rsa_public_key"]),
    "PLAINTEXT": lambda r, c: s.verify_plaintext(r, c["consumer_secret"], c["token_secret"]),
}

for line in sys.stdin:
    c = json.loads(line)
    headers = {"Authorization": c["authorization"]}
    params = s.collect_parameters(
        uri_query=urlparse(c["url"]).query, body=c["body"] or None, headers=headers,
        exclude_oauth_signature=False)
    r = Req()
    r.uri, r.http_method = c["url"], c["method"]
    r.params = [p for p in params if p[0] != "oauth_signature"]
    values = dict(params)
    r.signature = values["oauth_signature"]
    base = s.signature_base_string(
        c["method"], s.base_string_uri(c["url"]),
        s.normalize_parameters(r.params))
    ok = VERIFY[values["oauth_signature_method"]](r, c)
    print(json.dumps({"ok": bool(ok), "base": base}), flush=True)
