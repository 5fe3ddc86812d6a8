"""HTTPS to a name the sandbox has no DNS for: the connection goes to a VPS's address, the name is kept for
TLS (SNI and the certificate's check) and for Host, as a resolver pointing the name there would have it."""

from __future__ import annotations

import requests


class NamedHostAdapter(requests.adapters.HTTPAdapter):
    """Connects to `address` for https://`name`/..., keeping `name` for TLS and Host."""

    def __init__(self, name: str, address: str):
        self.name, self.address = name, address
        super().__init__()

    def send(self, request, **kwargs):
        connection_pool_kwargs = self.poolmanager.connection_pool_kw
        connection_pool_kwargs["server_hostname"] = self.name
        connection_pool_kwargs["assert_hostname"] = self.name
        request.url = request.url.replace(f"https://{self.name}", f"https://{self.address}", 1)
        request.headers["Host"] = self.name
        return super().send(request, **kwargs)


def session_for(name: str, address: str) -> requests.Session:
    """A requests session whose https://`name` requests reach `address`."""
    session = requests.Session()
    session.mount(f"https://{name}", NamedHostAdapter(name, address))
    return session
