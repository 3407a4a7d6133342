# Helpers shared by the rule files (kept apart from the rules, as `snakemake --lint` asks).
import re

SYNTHETIC = [n for n, d in config["dataset"].items() if d["source"] == "synthetic"]
ARCHIVES = [n for n, d in config["dataset"].items() if d["source"] == "archive"]
FOLDERS = [n for n, d in config["dataset"].items() if d["source"] == "folder"]


def dataset_source(name):
    """What data/{name}/ is laid out from: the archive under resources/, or the user's folder."""
    spec = config["dataset"][name]
    return spec["path"] if spec["source"] == "folder" else f"resources/{spec['archive']}"


def section(*keys):
    """A config section as compact JSON, passed to the package on the command line."""
    value = config
    for key in keys:
        value = value[key]
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def alternatives(names):
    """A wildcard regex matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"
