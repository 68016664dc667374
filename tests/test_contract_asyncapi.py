"""`docs/asyncapi.yaml` is a valid AsyncAPI 3.0 document whose `$ref`s resolve to the
schema files, validated by the AsyncAPI parser (`scripts/asyncapi.sh`, pinned npm package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from contract import (
    DLQ_HEADERS,
    INPUT_EVENT,
    INPUT_HEADERS,
    RESULT_EVENT,
    RESULT_HEADERS,
    SCHEMAS,
    load_schema,
    problem,
)

from streamstop.config.models import KafkaSettings
from streamstop.core.results import SCHEMA_VERSION

REPO = Path(__file__).resolve().parent.parent
DOCUMENT = REPO / "docs" / "asyncapi.yaml"
ASYNCAPI_SH = REPO / "scripts" / "asyncapi.sh"
# Each message's payload and headers: the schema file (and JSON pointer) they must be.
MESSAGES = {
    "cancelRequest": ((INPUT_EVENT, ""), (INPUT_HEADERS, "")),
    "cancelRequestText": ((INPUT_EVENT, "/$defs/bareUuidText"), (INPUT_HEADERS, "")),
    "stopResult": ((RESULT_EVENT, ""), (RESULT_HEADERS, "")),
    "invalidInputCopy": (None, (DLQ_HEADERS, "")),
}


def parse(document: Path) -> subprocess.CompletedProcess[str]:
    """Run the AsyncAPI parser on `document` (installing it on first use)."""
    return subprocess.run(
        [str(ASYNCAPI_SH), "validate", str(document)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The document as the parser resolved it, `$ref`s replaced by what they point to."""
    done = parse(DOCUMENT)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = orjson.loads(done.stdout)
    return document


def schema_at(name: str, pointer: str) -> Any:
    node: Any = load_schema(name)
    for part in filter(None, pointer.split("/")):
        node = node[part]
    return node


def test_the_document_is_asyncapi_3_with_the_schema_version_as_major(
    resolved: dict[str, Any],
) -> None:
    assert resolved["asyncapi"].startswith("3.0.")
    assert resolved["info"]["version"].split(".")[0] == str(SCHEMA_VERSION)


def test_messages_resolve_to_the_schema_files(resolved: dict[str, Any]) -> None:
    messages = resolved["components"]["messages"]
    assert set(messages) == set(MESSAGES)
    for name, (payload, headers) in MESSAGES.items():
        for kind, (file, pointer) in [("headers", headers), ("payload", payload or ("", ""))]:
            if not file:
                continue
            got, want = messages[name][kind], schema_at(file, pointer)
            # The parser inlines a schema's own `$ref`s too: compare the identity, or the
            # whole schema where it has none.
            assert (got["$id"] == want["$id"]) if "$id" in want else (got == want), name
    assert b"$ref" not in orjson.dumps(resolved), "every $ref is resolved"


def test_channels_are_the_configured_topics(resolved: dict[str, Any]) -> None:
    channels = resolved["channels"]
    defaults = KafkaSettings()
    for channel, parameter, default in [
        ("cancelRequests", "inputTopic", defaults.input_topic),
        ("stopResults", "outputTopic", defaults.output_topic),
        ("invalidInput", "dlqTopic", None),
    ]:
        assert channels[channel]["address"] == "{" + parameter + "}"
        assert channels[channel]["parameters"][parameter].get("default") == default
    output = channels["stopResults"]["bindings"]["kafka"]
    assert output["topicConfiguration"]["cleanup.policy"] == ["delete"]
    assert "Do not compact" in channels["stopResults"]["description"]


def test_every_example_in_the_document_matches_its_schemas(resolved: dict[str, Any]) -> None:
    checked = 0
    for name, (payload, headers) in MESSAGES.items():
        for example in resolved["components"]["messages"][name].get("examples", []):
            if payload is not None and "payload" in example:
                assert problem(payload[0], example["payload"], payload[1]) is None, example
            assert problem(headers[0], example.get("headers", {}), headers[1]) is None, example
            checked += 1
    assert checked >= len(MESSAGES)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("result-event.schema.json", "result-evnt.schema.json"), "result-evnt.schema.json"),
        (("action: send", "action: publish"), '"action" property must be equal'),
        (("address: '{outputTopic}'", "address: 7"), "address"),
    ],
)
def test_a_broken_document_is_refused(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    # The copy keeps the layout, so its relative `$ref`s reach the copied schemas.
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    (tmp_path / "docs").mkdir()
    broken = tmp_path / "docs" / "asyncapi.yaml"
    text = DOCUMENT.read_text()
    assert change[0] in text
    broken.write_text(text.replace(change[0], change[1]))
    done = parse(broken)
    assert done.returncode == 1
    assert complaint in done.stderr
    assert "not a valid AsyncAPI document" in done.stderr
