"""The ingest API's OpenAPI 3.1 document (``/openapi.json``) and a page that shows it (``/docs``),
built from the same pydantic models that validate requests; the page needs nothing from the
network (no CDN), like everything salespulse serves."""

from __future__ import annotations

import html
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from schemas.events import SalesEvent
from schemas.ingest import CheckIn, CheckInResult, IngestResponse
from schemas.settings import Settings


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
        },
    }


def _results(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResponse"}}},
    }


RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}


@cache
def openapi_document() -> dict[str, Any]:
    defaults = Settings.model_fields
    max_events = defaults["ingest_max_events"].default
    max_bytes = defaults["ingest_max_body_bytes"].default
    event_schema = TypeAdapter(SalesEvent).json_schema(ref_template="#/components/schemas/{model}")
    event_defs = event_schema.pop("$defs", {})
    schemas: dict[str, Any] = {**event_defs, "SalesEvent": event_schema}
    for model in (IngestResponse, CheckIn, CheckInResult):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    common = {
        "401": _error("missing, invalid or revoked token"),
        "403": _error("the token lacks the scope"),
        "413": _error(f"body over the limit (default {max_bytes} bytes) or too many events"),
        "429": {**_error("rate limit of the token exceeded"), "headers": RETRY},
        "503": {**_error("the broker is unavailable or busy: nothing was accepted"), "headers": RETRY},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "salespulse ingest API",
            "version": "1",
            "description": "Canonical sales events, CRM webhooks and field check-ins into the pipeline.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Post canonical events (scope events:write)",
                    "description": (
                        f"One event, a JSON array, or NDJSON; at most {max_events} events. Each is "
                        "validated on its own; rejected ones are dead-lettered with source `http`. "
                        "The answer comes after the broker acknowledged every accepted event."
                    ),
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/SalesEvent"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/SalesEvent"},
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _results("every event accepted"),
                        "207": _results("some accepted, some rejected (see results)"),
                        "400": _error("the body is not JSON, or holds no event"),
                        "415": _error("not application/json or application/x-ndjson"),
                        "422": _results("every event rejected (see results)"),
                        **common,
                    },
                }
            },
            "/v1/webhooks/{source}": {
                "post": {
                    "summary": "A CRM's webhook, mapped to events by the source's mapping file",
                    "description": "Signed with the source's shared secret (HMAC-SHA256) and a timestamp.",
                    "parameters": [
                        {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
                    "responses": {
                        "200": _results("every item accepted or ignored"),
                        "207": _results("some items rejected"),
                        "401": _error("bad signature, stale timestamp, or no secret configured"),
                        "404": _error("no mapping for this source"),
                        "422": _results("every mapped item rejected"),
                        "503": common["503"],
                    },
                }
            },
            "/v1/checkins": {
                "post": {
                    "summary": "Check in or out at an account (scope checkin; the token's rep)",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/CheckIn"}}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "per check-in: verified, out_of_range, unlocated or rejected",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/CheckInResult"},
                                    }
                                }
                            },
                        },
                        **common,
                    },
                }
            },
            "/v1/checkin/accounts": {
                "get": {
                    "summary": "The token's rep and their assigned accounts with positions (scope checkin)",
                    "security": [{"bearer": []}],
                    "responses": {"200": {"description": "rep and accounts"}, **common},
                }
            },
            "/checkin": {
                "get": {
                    "summary": "The check-in page for phones",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
            "/healthz": {
                "get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "The broker is reachable",
                    "responses": {"200": {"description": "ready"}, "503": _error("broker unreachable")},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
            },
        },
    }


def docs_page(document: dict[str, Any]) -> str:
    """A readable, self-contained listing of the API (the full schema is at /openapi.json)."""
    rows = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            responses = ", ".join(sorted(operation.get("responses", {})))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation.get('summary', ''))}<br><small>"
                f"{html.escape(operation.get('description', ''))}</small></td><td>{responses}</td></tr>"
            )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>salespulse ingest API</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;color:#111}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ccc;padding:.4rem .6rem;text-align:left;vertical-align:top}</style>"
        "</head><body><h1>salespulse ingest API</h1><p>The OpenAPI 3.1 document: "
        "<a href='/openapi.json'>/openapi.json</a>.</p><table><thead><tr><th>method</th><th>path</th>"
        "<th>what</th><th>answers</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>"
    )
