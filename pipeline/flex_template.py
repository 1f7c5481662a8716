"""`python -m pipeline.flex_template > metadata.json`: the Dataflow flex-template metadata, one parameter per
launcher flag of `pipeline.flags.build_parser` (label, help text, a validation regex from its type or
choices; all optional, as on the command line). A test keeps metadata.json in step with `--help`."""
from __future__ import annotations

import argparse
import json
import re
from typing import Any

from pipeline.flags import build_parser, switch_value

NAME = "beam-vector-sync"
DESCRIPTION = "Keeps vector stores (Qdrant, pgvector, Pinecone, MongoDB) exactly in sync with changing documents"
_INT, _FLOAT = r"^-?[0-9]+$", r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def parameters() -> list[dict[str, Any]]:
    found = []
    for action in build_parser()._actions:
        flags = [o for o in action.option_strings if o.startswith("--")]
        if not flags or isinstance(action, argparse._HelpAction):
            continue
        name = flags[0][2:]
        entry: dict[str, Any] = {"name": name, "label": name.replace("_", " ").capitalize(),
                                 "helpText": re.sub(r"\s+", " ", (action.help or name) % {"default": action.default}
                                                    if "%(" in (action.help or "") else (action.help or name)),
                                 "isOptional": True}
        if action.choices:
            entry["regexes"] = ["^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"]
        elif action.type is switch_value:  # an on/off flag: the template passes --flag=true|false
            entry["regexes"] = ["^(true|false)$"]
        elif action.type is int:
            entry["regexes"] = [_INT]
        elif action.type is float:
            entry["regexes"] = [_FLOAT]
        found.append(entry)
    return found


def metadata() -> dict[str, Any]:
    return {"name": NAME, "description": DESCRIPTION, "streaming": True,
            "supportsAtLeastOnce": False, "supportsExactlyOnce": True, "parameters": parameters()}


if __name__ == "__main__":
    print(json.dumps(metadata(), indent=2))
