"""The gateway process (uvicorn) of the e2e stack: the Host allow-list and forwarded headers, as a
browser page or a local process would meet them (docs/security.md, "Tokens, scopes and sessions")."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.e2e.conftest import Stack


def test_a_dns_rebinding_page_gets_nothing_from_a_dev_stack(stack: Stack) -> None:
    port = urlsplit(stack.url).port
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as c:
        # a page at http://rebind.attacker.example:PORT whose name now resolves to 127.0.0.1
        for host in (f"rebind.attacker.example:{port}", "attacker.example"):
            r = c.get("/v1/workflows", headers={"host": host})
            assert r.status_code == 421 and r.json()["error"] == "host_not_allowed", r.text
            r = c.post("/v1/workflows", json={"name": "x", "steps": []}, headers={"host": host})
            assert r.status_code == 421
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            assert c.get("/v1/workflows", headers={"host": host}).status_code == 200


def test_forwarded_headers_from_an_untrusted_peer_change_nothing(stack: Stack) -> None:
    # No FLOW_TRUSTED_PROXIES on this stack: a local process claiming TLS gets no Secure cookie
    # (uvicorn's own proxy-header handling, which trusts 127.0.0.1, is off).
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        r = c.post("/ui/login", json={"token": stack.token},
                   headers={"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"})
        assert r.status_code == 200, r.text
        cookies = r.headers.get_list("set-cookie")
        assert cookies and not any("secure" in h.lower().split("; ") for h in cookies)
