"""The demo Lambda function `make run` serves: it answers with who called it and what."""

from __future__ import annotations

import json
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = event.get("headers") or {}
    xfcc = headers.get("x-forwarded-client-cert", "")
    caller = next((part[4:] for part in xfcc.split(";") if part.startswith("URI=")), "")
    body = event.get("body") or ""
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "message": f"hello from {context.function_name}",
            "caller": caller,
            "method": event.get("method"),
            "path": event.get("raw_path"),
            "received": body,
        }) + "\n",
    }
