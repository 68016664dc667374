"""Certificate authorities made at test time (trustme), written as PEM files."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class TestCa:
    """A private CA whose certificate is in `ca_file`; `issue` signs leaf certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str) -> None:
        self._ca = trustme.CA(organization_name=f"streamstop test CA {name}")
        self._directory = directory
        self._name = name
        self.ca_file = directory / f"{name}-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, label: str, *identities: str) -> tuple[Path, Path]:
        """A certificate (chain) file and its key file for `identities` (host names, IP
        addresses), usable by a server or a client."""
        leaf = self._ca.issue_cert(*identities)
        certfile = self._directory / f"{self._name}-{label}.pem"
        keyfile = self._directory / f"{self._name}-{label}.key"
        for index, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(str(certfile), append=index > 0)
        leaf.private_key_pem.write_to_path(str(keyfile))
        return certfile, keyfile

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=self.ca_file)
