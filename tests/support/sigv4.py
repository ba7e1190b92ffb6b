"""AWS Signature V4 for single S3 requests, so tests can send exactly the headers they mean
(conditional PUTs, wrong secrets) without an SDK deciding for them."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from urllib.parse import quote, urlsplit


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_headers(method: str, url: str, access_key: str, secret_key: str, body: bytes = b"",
                   headers: dict[str, str] | None = None, region: str = "us-east-1") -> dict[str, str]:
    """`headers` plus the host, date, payload hash and Authorization headers for `method url`."""
    parts = urlsplit(url)
    now = dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    out = {k.lower(): v for k, v in (headers or {}).items()}
    out.update({"host": parts.netloc, "x-amz-date": amz_date,
                "x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    names = sorted(out)
    query = "&".join(sorted(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)))
    canonical = "\n".join([method, quote(parts.path or "/", safe="/-_.~"), query,
                           "".join(f"{n}:{str(out[n]).strip()}\n" for n in names), ";".join(names),
                           out["x-amz-content-sha256"]])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out
