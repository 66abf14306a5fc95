"""How an answer is read by its output's ``format`` (``line``, ``text``, ``json``) and how a JSON answer is
checked against the task's ``schema``: one place for the search (``adapters.parse_response``), the metrics
(``json_fields``) and the data (a gold answer that is not valid JSON is a data error). The reading itself
is ``plain_client.read_value``, so exports are read the same way."""

from __future__ import annotations

import functools
import json
from typing import Any

from .plain_client import first_json, read_value

__all__ = ["first_json", "json_problem", "load_json", "read_value"]


@functools.lru_cache(maxsize=32)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def load_json(value: Any) -> tuple[Any, str | None]:
    """A JSON value from a data cell or an answer (already parsed, or JSON text); (None, why) when the text
    is not JSON."""
    if not isinstance(value, str):
        return value, None
    try:
        return json.loads(value), None
    except ValueError as exc:
        return None, f"not JSON ({exc.msg} at character {exc.pos})"


def json_problem(value: Any, schema: dict[str, Any] | None) -> str | None:
    """Why ``value`` (JSON text or a parsed value) is not an acceptable JSON answer, or None when it is."""
    obj, why = load_json(value)
    if why:
        return why
    if schema is None:
        return None
    error = next(iter(_validator(json.dumps(schema, sort_keys=True)).iter_errors(obj)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"fails the schema{' at ' + where if where else ''}: {error.message}"
