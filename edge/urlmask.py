"""Secrets inside URLs, masked for display (`edge config show`, /api/config).

Webhook services put the credential in the URL itself: `user:pass@`, a query parameter
(`?token=`, `key=`, `sig=`...), or a path segment (Slack `/services/T0/B0/XXXX`, Discord
`/api/webhooks/ID/TOKEN`). User info and secret-named parameters are always masked; a path
segment is masked when it looks like a credential rather than a word: long, or of mixed
letters and digits. Showing less of a URL is safe; showing a token is not.
"""

from __future__ import annotations

import re

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
SECRET_PARAM = re.compile(
    r"token|key|secret|pass|pwd|auth|sig|signature|credential|session|code|hash", re.I)
USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
MASK = "***"


def token_like(segment: str) -> bool:
    """A path segment that reads as a credential: 16+ characters, or 8+ mixing letters and
    digits (an id such as 'v2' or '2024' or a word such as 'webhooks' stays)."""
    if len(segment) >= 16:
        return True
    return (len(segment) >= 8 and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment))


def mask_url(text: str) -> str:
    """`text` with credentials replaced by ***; anything that is not a URL is returned as is."""
    if not URL.match(text):
        return text
    text = USERINFO.sub(rf"\1{MASK}@", text)
    scheme, _, rest = text.partition("://")
    rest, hash_, fragment = rest.partition("#")
    rest, q, query = rest.partition("?")
    host, slash, path = rest.partition("/")
    path = "/".join(MASK if token_like(s) else s for s in path.split("/")) if slash else ""
    if q:
        parts = []
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            parts.append(f"{name}={MASK}" if eq and value and SECRET_PARAM.search(name) else item)
        query = "&".join(parts)
    if fragment:
        fragment = MASK  # a fragment never reaches the server; it may be a client-side token
    return f"{scheme}://{host}{slash}{path}{q}{query}{hash_}{fragment}"
