"""Which requests the server answers at all: the defence against web pages in the user's own browser.

A loopback bind stops other machines, not the browser: any page can send requests to
http://127.0.0.1:8080, and with DNS rebinding (Ollama's CVE-2024-28224) a page of another site can
even read the answers. So, before any route runs:

- Host: bound to loopback, a request must name the server by a loopback address or `localhost` (or
  `*.localhost`, which RFC 6761 keeps on this machine); names are never resolved, since resolving
  is what rebinding abuses. Bound to another address, the Host must be that address or one of
  `--allow-host`; bound to every interface (0.0.0.0, ::), any Host is taken: the user opened it
  on purpose (and should set --api-key). Otherwise 403.
- Origin: a browser names the page that sent a request. One from a page of another origin gets 403
  (a form or `fetch` with `text/plain` would otherwise start a generation without a preflight),
  unless `--cors ORIGIN` allows that origin, which then also gets CORS headers. Clients that are not
  browsers send no Origin and are not affected.
- A POST body must be declared JSON (`Content-Type: application/json`): 415 otherwise, so no
  "simple" cross-site request can reach a route.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

WILDCARDS = ("0.0.0.0", "::", "")


def _host_name(value: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'Example.COM.' -> 'example.com'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    def __init__(self, bound: str, allow_hosts: tuple[str, ...] = (), cors: tuple[str, ...] = ()):
        self.bound = _host_name(bound)
        self.allow_hosts = {_host_name(h) for h in allow_hosts}
        self.cors = {o.rstrip("/").lower() for o in cors}

    def host_allowed(self, host: str | None) -> bool:
        if self.bound in WILDCARDS:
            return True
        if not host:
            return False  # HTTP/1.1 requires it; browsers always send it
        name = _host_name(host)
        if name in self.allow_hosts or name == self.bound:
            return True
        return _is_loopback_name(self.bound) and _is_loopback_name(name)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """No Origin (not a browser, or a same-origin GET), the server's own origin, or --cors."""
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.cors:
            return True
        parts = urlsplit(origin)
        return bool(host) and parts.netloc == host.strip().lower()


class GuardMiddleware:
    """ASGI middleware applying a HostPolicy; `deny(status, message)` builds the error response."""

    def __init__(self, app: ASGIApp, policy: HostPolicy, deny):
        self.app = app
        self.policy = policy
        self.deny = deny

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        problem = None
        if not self.policy.host_allowed(host):
            problem = (403, f"requests must name this server by its own address (Host: {host!r} is not one); "
                            "see sense-local serve --allow-host")
        elif not self.policy.origin_allowed(headers.get("origin"), host):
            problem = (403, f"cross-origin requests from {headers.get('origin')} are not allowed; "
                            "see sense-local serve --cors")
        elif scope["method"] == "POST" and not _is_json(headers.get("content-type", "")):
            problem = (415, "the request body must be sent as Content-Type: application/json")
        if problem is not None:
            await self.deny(*problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))
