"""The secured test broker: one Kafka (scripts/kafka.sh up-secure) with SASL_SSL,
SASL_PLAINTEXT, mTLS and OAUTHBEARER listeners, the OAuth token server it trusts, how a
streamstop client reaches each listener, and the admin work tests need (SCRAM passwords,
DENY ACLs). The PLAINTEXT listener (`bootstrap`) is a super user's: tests produce and read
back through it with the helpers of kafkahelp.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafkahelp import LITERAL, TOPIC, change_acls, kafka_sh
from tokenserver import TokenServer

# How a client reaches each secured listener: name -> (listener, protocol, mechanism).
MODES: dict[str, tuple[str, str, str]] = {
    "scram-sha-512": ("SASL_SSL", "SASL_SSL", "SCRAM-SHA-512"),
    "scram-sha-256": ("SASL_SSL", "SASL_SSL", "SCRAM-SHA-256"),
    "plain": ("SASL_SSL", "SASL_SSL", "PLAIN"),
    "sasl-plaintext": ("SASL_PLAINTEXT", "SASL_PLAINTEXT", "SCRAM-SHA-512"),
    "mtls": ("MTLS", "SSL", ""),
    "oauthbearer": ("OAUTH", "SASL_SSL", "OAUTHBEARER"),
}
USER = "streamstop"  # SCRAM and PLAIN, made by kafka.sh
CERTIFICATE_USER = "streamstop-mtls"  # the CN of kafka.sh's client certificates
OAUTH_CLIENT = "streamstop-oauth"
# Short, so a test sees several tokens; the OAUTH listener's sessions end sooner still.
TOKEN_LIFETIME_S = 8

# Kafka's ACL codes (org.apache.kafka.common.acl).
_OPERATIONS = {"ALL": 2, "READ": 3, "WRITE": 4, "DESCRIBE": 8, "DESCRIBE_CONFIGS": 10}
_DENY, _ALLOW = 2, 3


@dataclass(frozen=True)
class SecureKafka:
    """The session's secured broker and its token server."""

    state_dir: Path
    listeners: dict[str, str]
    tokens: TokenServer

    @classmethod
    def start_in(cls, state_dir: Path, tokens: TokenServer) -> SecureKafka:
        """Start (or find running) the secured broker of `state_dir`, trusting `tokens`."""
        kafka_sh("up-secure", state_dir, env={"KAFKA_OAUTH_JWKS_URL": tokens.jwks_url})
        lines = (state_dir / "listeners").read_text().splitlines()
        listeners = {name: address for name, _, address in (line.split() for line in lines)}
        oauth_secret = state_dir / "users" / "oauth-client-secret"
        if not oauth_secret.exists():
            oauth_secret.write_text(secrets.token_hex(16) + "\n")
        tokens.set_client(OAUTH_CLIENT, oauth_secret.read_text().strip())
        return cls(state_dir, listeners, tokens)

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener: no login, a super user (for test setup and checks)."""
        return self.listeners["PLAINTEXT"]

    @property
    def tls(self) -> Path:
        """kafka.sh's certificates: ca, client, client-protected, expired, other, other-ca."""
        return self.state_dir / "tls"

    @property
    def password_file(self) -> Path:
        return self.state_dir / "users" / USER

    @property
    def oauth_secret_file(self) -> Path:
        return self.state_dir / "users" / "oauth-client-secret"

    def secret_values(self) -> list[str]:
        """Every secret a client of this broker may hold: none may appear in a log."""
        values = [self.password_file, self.oauth_secret_file]
        values.append(self.tls / "client-protected.password")
        return [path.read_text().strip() for path in values] + list(self.tokens.tokens)

    def kafka_config(self, mode: str, **overrides: Any) -> dict[str, Any]:
        """The `[kafka]` keys (as scenario.config_for's `kafka__KEY` arguments) that reach
        the listener of `mode` (see MODES) as its usual user; `overrides` replace keys."""
        listener, protocol, mechanism = MODES[mode]
        config: dict[str, Any] = {
            "bootstrap_servers": self.listeners[listener],
            "security_protocol": protocol,
            "sasl_mechanism": mechanism,
        }
        if protocol in ("SSL", "SASL_SSL"):
            config["ssl_cafile"] = str(self.tls / "ca.crt")
        if mode == "mtls":
            # The encrypted key: its password comes from a file too.
            config["ssl_certfile"] = str(self.tls / "client-protected.crt")
            config["ssl_keyfile"] = str(self.tls / "client-protected.key")
            config["ssl_key_password_file"] = str(self.tls / "client-protected.password")
        elif mode == "oauthbearer":
            config["oauth_token_url"] = self.tokens.token_url
            config["oauth_client_id"] = OAUTH_CLIENT
            config["oauth_client_secret_file"] = str(self.oauth_secret_file)
            config["oauth_scope"] = "kafka"
        else:
            config["sasl_username"] = USER
            config["sasl_password_file"] = str(self.password_file)
        config.update(overrides)
        return {f"kafka__{key}": value for key, value in config.items()}

    def set_scram_password(
        self, user: str, password: str, mechanism: str = "SCRAM-SHA-512"
    ) -> None:
        """Create SCRAM user `user` or change its password, as an operator would (Kafka's
        ConfigCommand, which reads SCRAM credentials only from its command line)."""
        try:
            kafka_sh(
                "tool",
                "kafka.admin.ConfigCommand",
                "--bootstrap-server",
                self.bootstrap,
                "--alter",
                "--entity-type",
                "users",
                "--entity-name",
                user,
                "--add-config",
                f"{mechanism}=[password={password}]",
            )
        except RuntimeError as exc:
            raise RuntimeError(str(exc).replace(password, "***")) from None

    @contextmanager
    def denied(
        self,
        principal: str,
        name: str,
        operation: str = "ALL",
        resource: tuple[int, int] = (TOPIC, LITERAL),
    ) -> Iterator[None]:
        """`principal` (e.g. "User:streamstop") may not do `operation` on topic `name` (or
        the `resource` named so, see kafkahelp.change_acls) inside the block; everyone else
        still may (an ALLOW for User:* on it comes with it)."""
        acls = [
            (principal, _OPERATIONS[operation], _DENY),
            ("User:*", _OPERATIONS["ALL"], _ALLOW),
        ]
        change_acls(self.bootstrap, name, acls, create=True, resource=resource)
        try:
            yield
        finally:
            change_acls(self.bootstrap, name, acls, create=False, resource=resource)
