"""Configuration: lookup order, env overrides, validation messages, secrets kept secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_proc import streamstop
from pydantic import ValidationError
from tlscerts import TestCa

from streamstop.config import (
    ConfigError,
    Settings,
    load,
    load_settings,
    render_effective,
    render_origins,
)

TOKEN = "Zm9vYmFyLURJU1RJTkNUSVZFLXRva2Vu"
TOKEN_ENV = {"STREAMSTOP_API__TOKEN": TOKEN}
SHIPPED = Path(__file__).resolve().parent.parent / "config" / "streamstop.toml"


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The repository's own ./config/streamstop.toml must not leak into these tests.
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: str | None, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env)
    return caught.value.problems


def test_built_in_defaults_follow_the_spec() -> None:
    settings = load_settings(None, TOKEN_ENV)

    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.kafka.input_topic == "message-cancel-requests"
    assert settings.kafka.output_topic == "message-stop-results"
    assert settings.kafka.dlq_topic == ""
    assert settings.kafka.group_id == "streamstop"
    assert settings.kafka.auto_offset_reset == "earliest"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.batch.max_size == 10_000
    assert settings.batch.max_wait_ms == 500
    assert settings.batch.max_in_flight == 4
    assert settings.batch.max_pending == 100_000
    assert settings.batch.max_record_age_s == 0
    assert settings.api.url == "https://direct.revicom.ltd/api/v1/message/stop"
    assert settings.api.timeout_s == 10
    assert settings.api.max_requests_per_second == 0
    assert settings.api.ca_file is None
    assert (settings.api.client_certfile, settings.api.client_keyfile) == (None, None)
    assert (settings.api.proxy_url, settings.api.trust_env) == ("", False)
    assert settings.api.max_response_bytes == 16 * 1024 * 1024
    assert (settings.retry.initial_backoff_ms, settings.retry.max_backoff_ms) == (200, 30_000)
    assert settings.retry.deadline_s == 600
    assert settings.retry.max_retry_after_s == 300
    assert settings.delivery.guarantee == "at_least_once"
    assert settings.delivery.transactional_id_prefix == "streamstop"
    assert settings.delivery.transaction_interval_ms == 100
    assert settings.delivery.transaction_max_records == 10_000
    assert settings.delivery.transaction_timeout_ms == 60_000
    assert settings.observability.log_level == "info"
    assert settings.observability.log_format == "json"
    assert settings.observability.http_port == 9090
    assert settings.lifecycle.shutdown_timeout_s == 25
    assert settings.lifecycle.revoke_timeout_s == 20
    assert settings.api_token() == TOKEN
    assert settings.sasl_password_value() is None


def test_shipped_file_holds_exactly_the_defaults() -> None:
    shipped = load_settings(str(SHIPPED), TOKEN_ENV)

    assert shipped == load_settings(None, TOKEN_ENV)
    assert json.loads(render_effective(shipped)).keys() == Settings.model_fields.keys()


def test_shipped_file_alone_only_lacks_the_token_and_says_how_to_set_it() -> None:
    [problem] = problems_of(str(SHIPPED), {})

    assert problem.startswith("api.token: the stop API token is required")
    assert "STREAMSTOP_API__TOKEN" in problem
    assert "api.token_file" in problem


def test_the_token_is_not_needed_where_only_kafka_is_used() -> None:
    loaded = load(str(SHIPPED), {}, need_api_token=False)

    assert loaded.settings.kafka == load_settings(str(SHIPPED), TOKEN_ENV).kafka
    assert loaded.settings.api.token.get_secret_value() == ""


def test_environment_beats_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[kafka]\ngroup_id = "from-file"\n[batch]\nmax_size = 5\n')

    settings = load_settings(
        str(config),
        {
            **TOKEN_ENV,
            "STREAMSTOP_KAFKA__GROUP_ID": "from-env",
            "STREAMSTOP_BATCH__MAX_WAIT_MS": "7",
        },
    )

    assert settings.kafka.group_id == "from-env"
    assert settings.batch.max_size == 5
    assert settings.batch.max_wait_ms == 7


def test_environment_names_are_case_insensitive() -> None:
    settings = load_settings(None, {"streamstop_api__token": TOKEN})

    assert settings.api_token() == TOKEN


def test_file_lookup_order(tmp_path: Path) -> None:
    def group(name: str) -> str:
        return f'[kafka]\ngroup_id = "{name}"\n'

    explicit = write(tmp_path / "explicit.toml", group("explicit"))
    from_env = write(tmp_path / "env.toml", group("env"))
    env = {**TOKEN_ENV, "STREAMSTOP_CONFIG": str(from_env)}

    assert load_settings(None, TOKEN_ENV).kafka.group_id == "streamstop"
    write(tmp_path / "config" / "streamstop.toml", group("cwd"))
    assert load_settings(None, TOKEN_ENV).kafka.group_id == "cwd"
    assert load_settings(None, env).kafka.group_id == "env"
    assert load_settings(str(explicit), env).kafka.group_id == "explicit"


@pytest.mark.parametrize(
    ("path", "env"),
    [
        ("missing.toml", TOKEN_ENV),
        (None, {**TOKEN_ENV, "STREAMSTOP_CONFIG": "missing.toml"}),
    ],
)
def test_a_named_file_that_does_not_exist_is_an_error(
    path: str | None, env: dict[str, str]
) -> None:
    [problem] = problems_of(path, env)

    assert problem.startswith("config file missing.toml: does not exist (named by ")
    assert ("--config" if path else "$STREAMSTOP_CONFIG") in problem


def test_unknown_keys_in_the_file_are_named(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[kafka]\nbootstrap = "x:1"\n[bogus]\nkey = 1\n')

    problems = problems_of(str(config), TOKEN_ENV)

    assert sorted(problem.split(":")[0] for problem in problems) == ["bogus", "kafka.bootstrap"]


@pytest.mark.parametrize(
    ("toml", "suggestion"),
    [
        (
            '[kafka]\nbootstrap_server = "x:1"\n',
            "kafka.bootstrap_server: unknown key; did you mean `kafka.bootstrap_servers`?",
        ),
        ("[kafak]\ngroup_id = 1\n", "kafak: unknown section; did you mean `kafka`?"),
        ("[api]\ntimeout = 3\n", "api.timeout: unknown key; did you mean `api.timeout_s`?"),
    ],
)
def test_unknown_keys_in_the_file_suggest_the_closest_known_one(
    tmp_path: Path, toml: str, suggestion: str
) -> None:
    config = write(tmp_path / "c.toml", toml)

    assert problems_of(str(config), TOKEN_ENV) == [f"{suggestion} (from {config})"]


def test_unknown_variables_suggest_the_variable_meant() -> None:
    env = {**TOKEN_ENV, "STREAMSTOP_KAFKA__BOOTSTRAP_SERVER": "x:1"}

    assert problems_of(None, env) == [
        "kafka.bootstrap_server: unknown key; did you mean STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS? "
        "(from STREAMSTOP_KAFKA__BOOTSTRAP_SERVER)"
    ]


def test_an_unknown_key_like_no_other_gets_no_suggestion(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[batch]\nzzz = 1\n")

    assert problems_of(str(config), TOKEN_ENV) == [f"batch.zzz: unknown key (from {config})"]


@pytest.mark.parametrize(
    ("variable", "key"),
    [("STREAMSTOP_KAFKA__NOPE", "kafka.nope"), ("STREAMSTOP_BOGUS__KEY", "bogus")],
)
def test_unknown_keys_in_the_environment_are_named(variable: str, key: str) -> None:
    [problem] = problems_of(None, {**TOKEN_ENV, variable: "1"})

    assert problem.startswith(f"{key}: unknown")
    assert variable in problem


def test_prefixed_variables_without_double_underscore_are_ignored(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "")
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_CONFIG": str(config),
        "STREAMSTOP_SERVICE_HOST": "10.0.0.1",
        "STREAMSTOP_PORT_9090_TCP": "tcp://10.0.0.1:9090",
    }

    assert load_settings(None, env) == load_settings(None, TOKEN_ENV)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("batch", "max_size", "0"),
        ("batch", "max_size", "10001"),
        ("batch", "max_size", "ten"),
        ("batch", "max_wait_ms", "0"),
        ("batch", "max_in_flight", "0"),
        ("batch", "max_pending", "-1"),
        ("batch", "max_record_age_s", "-1"),
        ("kafka", "auto_offset_reset", "middle"),
        ("kafka", "security_protocol", "TLS"),
        ("kafka", "sasl_mechanism", "GSSAPI"),
        ("kafka", "bootstrap_servers", "localhost"),
        ("kafka", "output_topic", "message-cancel-requests"),
        ("kafka", "input_topic", "bad topic"),
        ("api", "url", "ftp://example.com/stop"),
        ("api", "url", "https://user:pw@example.com/stop"),
        ("api", "url", "https://example.com:99999/stop"),
        ("api", "max_response_bytes", "65536"),
        ("api", "proxy_url", "https://proxy.example:3128"),
        ("api", "proxy_url", "socks5://proxy.example:1080"),
        ("api", "proxy_url", "http://proxy.example:3128/path"),
        ("api", "proxy_url", "proxy.example:3128"),
        ("api", "trust_env", "sometimes"),
        ("retry", "max_retry_after_s", "0"),
        ("api", "timeout_s", "-1"),
        ("api", "timeout_s", "nan"),
        ("api", "max_requests_per_second", "-0.5"),
        ("retry", "max_backoff_ms", "100"),
        ("retry", "deadline_s", "0"),
        ("observability", "log_level", "verbose"),
        ("observability", "log_format", "xml"),
        ("observability", "http_port", "65536"),
        ("lifecycle", "shutdown_timeout_s", "0"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(section: str, key: str, value: str) -> None:
    variable = f"STREAMSTOP_{section.upper()}__{key.upper()}"

    [problem] = problems_of(None, {**TOKEN_ENV, variable: value})

    assert problem.startswith(f"{section}.{key}: ")


@pytest.mark.parametrize(
    "url",
    [
        "http://direct.revicom.ltd/api/v1/message/stop",
        "http://10.0.0.1:8080/stop",
        "http://localhost.example.com/stop",
        "http://[::2]/stop",
    ],
)
def test_plain_http_is_refused_unless_the_host_is_loopback(url: str) -> None:
    [problem] = problems_of(None, {**TOKEN_ENV, "STREAMSTOP_API__URL": url})

    assert problem.startswith("api.url: must be https:// unless its host is loopback")
    assert "clear text" in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/stop",
        "http://127.10.20.30/stop",
        "http://[::1]:8080/stop",
        "http://localhost:8080/stop",
        "http://LOCALHOST/stop",
        "https://direct.revicom.ltd/api/v1/message/stop",
    ],
)
def test_plain_http_to_loopback_and_https_anywhere_are_accepted(url: str) -> None:
    assert load_settings(None, {**TOKEN_ENV, "STREAMSTOP_API__URL": url}).api.url == url


# Kafka's TLS files are checked with the protocol that uses them: tests/test_kafka_settings.py.
FILE_KEYS = [
    ("api", "ca_file"),
    ("api", "client_certfile"),
]


@pytest.mark.parametrize(("section", "key"), FILE_KEYS)
def test_a_missing_file_is_one_line_naming_the_key(tmp_path: Path, section: str, key: str) -> None:
    missing = tmp_path / "nope.pem"
    variable = f"STREAMSTOP_{section.upper()}__{key.upper()}"

    [problem] = problems_of(None, {**TOKEN_ENV, variable: str(missing)})

    assert problem == (
        f"{section}.{key}: cannot read {missing}: No such file or directory (from {variable})"
    )


@pytest.mark.parametrize(("section", "key"), FILE_KEYS)
def test_a_path_that_cannot_be_read_as_a_file_is_one_line(
    tmp_path: Path, section: str, key: str
) -> None:
    variable = f"STREAMSTOP_{section.upper()}__{key.upper()}"

    [problem] = problems_of(None, {**TOKEN_ENV, variable: str(tmp_path)})

    assert problem.startswith(f"{section}.{key}: cannot read {tmp_path}: Is a directory")


@pytest.mark.parametrize(
    ("key", "protocol", "says"),
    [
        ("api.ca_file", "PLAINTEXT", "is not a PEM CA bundle ("),
        ("kafka.ssl_cafile", "SSL", "holds no usable PEM certificate ("),
    ],
)
def test_a_ca_file_that_is_not_a_pem_bundle_is_refused(
    tmp_path: Path, key: str, protocol: str, says: str
) -> None:
    bundle = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\nnope\n")
    section, name = key.split(".")
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_KAFKA__SECURITY_PROTOCOL": protocol,
        f"STREAMSTOP_{section.upper()}__{name.upper()}": str(bundle),
    }

    [problem] = problems_of(None, env)

    assert problem.startswith(f"{key}: {bundle} {says}")


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"), "config")


def test_tls_files_that_load_are_accepted(test_ca: TestCa) -> None:
    certfile, keyfile = test_ca.issue("client", "streamstop.test")
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_API__CA_FILE": str(test_ca.ca_file),
        "STREAMSTOP_API__CLIENT_CERTFILE": str(certfile),
        "STREAMSTOP_API__CLIENT_KEYFILE": str(keyfile),
        "STREAMSTOP_KAFKA__SECURITY_PROTOCOL": "SSL",
        "STREAMSTOP_KAFKA__SSL_CAFILE": str(test_ca.ca_file),
    }

    settings = load_settings(None, env)

    assert settings.api.ca_file == test_ca.ca_file
    assert (settings.api.client_certfile, settings.api.client_keyfile) == (certfile, keyfile)
    assert settings.kafka.ssl_cafile == str(test_ca.ca_file)


def test_a_client_key_needs_its_certificate(test_ca: TestCa) -> None:
    _, keyfile = test_ca.issue("lonely", "streamstop.test")

    [problem] = problems_of(None, {**TOKEN_ENV, "STREAMSTOP_API__CLIENT_KEYFILE": str(keyfile)})

    assert problem.startswith("api.client_keyfile: needs api.client_certfile")


def test_a_client_certificate_with_the_wrong_key_is_refused(test_ca: TestCa) -> None:
    certfile, _ = test_ca.issue("one", "one.test")
    _, other_key = test_ca.issue("two", "two.test")
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_API__CLIENT_CERTFILE": str(certfile),
        "STREAMSTOP_API__CLIENT_KEYFILE": str(other_key),
    }

    [problem] = problems_of(None, env)

    assert problem.startswith("api.client_keyfile: api.client_certfile and its key do not load")


def test_check_config_masks_secrets_in_urls(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.toml",
        "[api]\n"
        'url = "https://api.example/stop?apikey=Q-SECRET-1&region=eu"\n'
        'proxy_url = "http://svc:P-SECRET-2@proxy.example:3128"\n',
    )

    done = _check_config(tmp_path, "--config", str(config), env=TOKEN_ENV)

    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["api"]["url"] == "https://api.example/stop?apikey=***&region=***"
    assert shown["api"]["proxy_url"] == "http://svc:***@proxy.example:3128"
    assert "SECRET" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_missing_ca_file_exits_2_with_one_line_from_every_command(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "api-ca.pem"
    config = write(tmp_path / "c.toml", f'[api]\nca_file = "{missing}"\n')

    done = streamstop(command, "--config", str(config), cwd=tmp_path, env=TOKEN_ENV)

    # check-config says it on stderr; run logs it, one JSON line like every other line.
    said = done.stderr if command == "check-config" else done.stdout
    assert done.returncode == 2
    assert str(missing) in said
    assert "Traceback" not in done.stdout + done.stderr
    [line] = [line for line in said.splitlines() if "api.ca_file" in line]
    assert "cannot read" in line


def test_bad_values_in_the_file_name_the_key_and_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[batch]\nmax_size = 10001\n")

    assert problems_of(str(config), TOKEN_ENV) == [
        f"batch.max_size: must be less than or equal to 10000 (from {config})"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[batch]\nmax_size = 0\n[api]\nurl = "nope"\n')

    problems = problems_of(str(config), {"STREAMSTOP_OBSERVABILITY__LOG_FORMAT": "xml"})

    assert [p.split(":")[0] for p in problems] == [
        "batch.max_size",
        "api.url",
        "observability.log_format",
    ]


def test_enumerations_accept_any_case() -> None:
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "STREAMSTOP_KAFKA__AUTO_OFFSET_RESET": "Latest",
    }

    settings = load_settings(None, env)

    assert settings.observability.log_level == "warning"
    assert settings.kafka.auto_offset_reset == "latest"


def test_exactly_once_and_its_transaction_keys() -> None:
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_DELIVERY__GUARANTEE": "Exactly_Once",
        "STREAMSTOP_DELIVERY__TRANSACTIONAL_ID_PREFIX": "stop.prod_1",
        "STREAMSTOP_DELIVERY__TRANSACTION_INTERVAL_MS": "250",
        "STREAMSTOP_DELIVERY__TRANSACTION_MAX_RECORDS": "500",
        "STREAMSTOP_DELIVERY__TRANSACTION_TIMEOUT_MS": "30000",
    }

    delivery = load_settings(None, env).delivery

    assert delivery.guarantee == "exactly_once"
    assert delivery.transactional_id_prefix == "stop.prod_1"
    assert (delivery.transaction_interval_ms, delivery.transaction_max_records) == (250, 500)
    assert delivery.transaction_timeout_ms == 30_000


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("TRANSACTIONAL_ID_PREFIX", "has space", "should match pattern"),
        ("TRANSACTIONAL_ID_PREFIX", "", "should match pattern"),
        ("TRANSACTION_INTERVAL_MS", "0", "greater than or equal to 1"),
        ("TRANSACTION_MAX_RECORDS", "0", "greater than or equal to 1"),
        ("TRANSACTION_TIMEOUT_MS", "100", "greater than or equal to 1000"),
        ("TRANSACTION_TIMEOUT_MS", "1000000", "less than or equal to 900000"),
    ],
)
def test_transaction_keys_are_checked(key: str, value: str, says: str) -> None:
    env = {**TOKEN_ENV, f"STREAMSTOP_DELIVERY__{key}": value}

    [problem] = problems_of(None, env)

    assert problem.startswith(f"delivery.{key.lower()}: ")
    assert says in problem


def test_a_transaction_timeout_shorter_than_two_intervals_is_refused() -> None:
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_DELIVERY__TRANSACTION_INTERVAL_MS": "5000",
        "STREAMSTOP_DELIVERY__TRANSACTION_TIMEOUT_MS": "9000",
    }

    [problem] = problems_of(None, env)

    assert problem.startswith(
        "delivery.transaction_timeout_ms: must be at least twice delivery.transaction_interval_ms"
    )


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[batch]\nmax_size = = 3\n")

    [problem] = problems_of(str(config), TOKEN_ENV)

    assert str(config) in problem
    assert "line 2" in problem


@pytest.mark.parametrize(
    "toml",
    [
        f'[api]\ntoken = {{ value = "{TOKEN}" }}\n',
        f'[api]\ntoken = ["{TOKEN}"]\n',
        f'[api]\ntoken = "{TOKEN} with spaces"\n',
        f'[api]\ntoken = "{TOKEN}\n',
        f'[api]\ntokne = "{TOKEN}"\n',
        f'[kafka]\nsasl_password = {{ p = "{TOKEN}" }}\n',
        f'api = "{TOKEN}"\n',
    ],
)
def test_a_bad_secret_never_appears_in_errors(tmp_path: Path, toml: str) -> None:
    config = write(tmp_path / "c.toml", toml)

    with pytest.raises(ConfigError) as caught:
        load_settings(str(config), {})

    assert TOKEN not in "\n".join(caught.value.problems)
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value)
    # A ValidationError keeps the input; it must not ride along as the context.
    assert not isinstance(caught.value.__context__, ValidationError)


def test_a_bad_secret_from_the_environment_never_appears_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"STREAMSTOP_API__TOKEN": f"{TOKEN}\r\nX-Evil: 1"})

    [problem] = caught.value.problems
    assert problem.startswith("api.token: ")
    assert TOKEN not in str(caught.value)


def test_secrets_are_masked_in_output_and_repr(tmp_path: Path) -> None:
    password = "S3cr3t-DISTINCTIVE-password"
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMSTOP_KAFKA__SASL_USERNAME": "svc",
        "STREAMSTOP_KAFKA__SASL_PASSWORD": password,
    }

    settings = load_settings(None, env)
    shown = json.loads(render_effective(settings))

    assert shown["api"]["token"] == "***"
    assert shown["kafka"]["sasl_password"] == "***"
    assert shown["api"]["token_file"] == ""
    for text in (render_effective(settings), repr(settings), str(settings)):
        assert TOKEN not in text
        assert password not in text
    assert settings.sasl_password_value() == password


def test_token_file_is_stripped_and_read_again_after_a_change(tmp_path: Path) -> None:
    secret = write(tmp_path / "token", f"  {TOKEN}\n")
    settings = load_settings(None, {"STREAMSTOP_API__TOKEN_FILE": str(secret)})

    assert settings.api_token() == TOKEN
    secret.write_text("rotated-token\n")
    assert settings.api_token() == "rotated-token"
    assert json.loads(render_effective(settings))["api"]["token_file"] == str(secret)
    assert TOKEN not in render_effective(settings)


def test_sasl_password_file_is_stripped(tmp_path: Path) -> None:
    secret = write(tmp_path / "password", "pass word\n\n")
    settings = load_settings(
        None, {**TOKEN_ENV, "STREAMSTOP_KAFKA__SASL_PASSWORD_FILE": str(secret)}
    )

    assert settings.sasl_password_value() == "pass word"


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_unreadable_or_empty_token_file_is_an_error(tmp_path: Path, content: str | None) -> None:
    secret = tmp_path / "token"
    if content is not None:
        secret.write_text(content)

    [problem] = problems_of(None, {"STREAMSTOP_API__TOKEN_FILE": str(secret)})

    assert problem.startswith("api.token_file: ")
    assert str(secret) in problem


def test_token_file_removed_after_start_is_a_config_error(tmp_path: Path) -> None:
    secret = write(tmp_path / "token", TOKEN)
    settings = load_settings(None, {"STREAMSTOP_API__TOKEN_FILE": str(secret)})
    secret.unlink()

    with pytest.raises(ConfigError) as caught:
        settings.api_token()

    assert caught.value.problems[0].startswith("api.token_file: cannot read")


@pytest.mark.parametrize(("secret_key", "section"), [("token", "api"), ("sasl_password", "kafka")])
def test_a_secret_and_its_file_together_is_an_error(
    tmp_path: Path, secret_key: str, section: str
) -> None:
    secret = write(tmp_path / "secret", "other")
    config = write(
        tmp_path / "c.toml",
        f'[{section}]\n{secret_key} = "{TOKEN}"\n{secret_key}_file = "{secret}"\n',
    )

    [problem] = problems_of(str(config), TOKEN_ENV if section == "kafka" else {})

    assert problem.startswith(f"{section}.{secret_key}_file: set either")
    assert TOKEN not in problem


def test_sasl_needs_a_username_and_a_password() -> None:
    problems = problems_of(None, {**TOKEN_ENV, "STREAMSTOP_KAFKA__SECURITY_PROTOCOL": "sasl_ssl"})

    assert [p.split(":")[0] for p in problems] == ["kafka.sasl_username", "kafka.sasl_password"]
    assert "STREAMSTOP_KAFKA__SASL_PASSWORD" in problems[1]
    assert "kafka.sasl_password_file" in problems[1]


def test_every_value_knows_where_it_came_from(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[kafka]\ngroup_id = "g"\ninput_topic = "in"\n')
    env = {**TOKEN_ENV, "STREAMSTOP_KAFKA__INPUT_TOPIC": "in-env"}

    loaded = load(str(config), env)

    assert loaded.file == config
    assert str(loaded.origin(("kafka", "group_id"))) == f"file {config}"
    assert str(loaded.origin(("kafka", "input_topic"))) == "env STREAMSTOP_KAFKA__INPUT_TOPIC"
    assert str(loaded.origin(("kafka", "output_topic"))) == "default"
    shown = render_origins(loaded).splitlines()
    assert len(shown) == sum(
        len(section) for section in json.loads(render_effective(loaded.settings)).values()
    )
    assert 'kafka.input_topic = "in-env"' in next(line for line in shown if "input_topic" in line)
    assert next(line for line in shown if line.startswith("api.token ")).endswith(
        "(env STREAMSTOP_API__TOKEN)"
    )
    assert TOKEN not in "\n".join(shown)


def test_a_variable_with_one_underscore_too_few_is_ignored_with_a_note() -> None:
    env = {
        **TOKEN_ENV,
        "STREAMSTOP_KAFKA_GROUP_ID": "ignored",
        "STREAMSTOP_SERVICE_HOST": "10.0.0.1",
    }

    loaded = load(None, env)

    assert loaded.settings.kafka.group_id == "streamstop"
    assert loaded.notes == (
        "STREAMSTOP_KAFKA_GROUP_ID is ignored: a config variable has two underscores between "
        "section and key; did you mean STREAMSTOP_KAFKA__GROUP_ID?",
    )


def _check_config(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return streamstop("check-config", *args, cwd=cwd, env=env)


def test_check_config_succeeds_with_masked_token(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[batch]\nmax_size = 250\n")

    done = _check_config(tmp_path, "--config", str(config), env=TOKEN_ENV)

    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["batch"]["max_size"] == 250
    assert shown["api"]["token"] == "***"
    assert TOKEN not in done.stdout + done.stderr


def test_check_config_reports_one_line_per_problem(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.toml",
        f'[batch]\nmax_size = 0\n[api]\ntoken = {{ t = "{TOKEN}" }}\nnope = 1\n',
    )

    done = _check_config(tmp_path, "--config", str(config))

    assert done.returncode == 2
    assert done.stdout == ""
    loaded, *lines = done.stderr.splitlines()
    assert loaded == f"streamstop: config file: {config}"
    assert [line.split(": ")[2] for line in lines] == ["batch.max_size", "api.token", "api.nope"]
    assert TOKEN not in done.stderr
