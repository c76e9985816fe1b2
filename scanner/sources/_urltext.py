"""URLs as error messages may quote them: without what could be a credential.

A presigned URL carries its signature and session token in the query string
(``X-Amz-Security-Token``, ``X-Amz-Signature``, ``sig``, ...) and a URL may carry ``user:password@``;
either would be a live credential in a verdict line, a log or the summary. Messages keep the scheme,
host, port and path, which are what an operator needs to tell one URL from another, and say that a
query was there (``?…``) without its text. Pure functions, standard library only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ("quote_url", "scrub_urls")

# a scheme, "://", then up to the first character that cannot be inside a URL quoted in text
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>()\[\]{}]*(?:\[[^\s\]]*\][^\s\"'<>(){}]*)?")


def quote_url(url: str) -> str:
    """``url`` fit to quote in a message: no userinfo, no query, no fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # not even splittable: keep nothing past the host's place
        head, sep, rest = url.partition("://")
        return f"{head}{sep}{rest.split('/', 1)[0].rpartition('@')[2].split('?', 1)[0]}/\u2026"
    netloc = parts.netloc.rpartition("@")[2]
    quoted = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return quoted + ("?\u2026" if parts.query else "")


def scrub_urls(text: str) -> str:
    """``text`` with every URL in it replaced by :func:`quote_url`'s form of it."""
    if "://" not in text:
        return text
    return _URL.sub(_quote_match, text)


def _quote_match(m: re.Match[str]) -> str:
    # punctuation that ends a sentence is the text's, not the URL's
    url = m.group(0)
    core = url.rstrip(".,;:!?")
    return quote_url(core) + url[len(core) :]
