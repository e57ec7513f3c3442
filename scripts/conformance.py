#!/usr/bin/env python3
"""Corpus conformance: Petrel's endpoint answers next to ClickHouse's, on the shared corpus.

For each Tinybird project of the corpus (../shared/corpus, see its README.md), the harness:

1. parses the datafiles with Tinybird's own parsers (the `tinybird` PyPI package of the
   tb-forward tools venv), independently of Petrel;
2. generates seeded rows for every landing datasource (not the targets of materialized pipes),
   drawing strings from the project's fixtures, the SQL literals of its pipes and its
   parameter defaults, ids from small shared pools and times from the last 7 days (UTC);
3. starts Petrel on a copy of the project and sends it the rows (`POST /v0/events`); when
   `petrel local start` exits on load errors, the failing files are removed from the copy and
   it starts again (reported as "starts only without N failing files"; `--no-prune`: "does
   not start"); the endpoints of removed files are "not served" with their errors;
4. builds the same tables, materialized views and rows in ClickHouse (chdb, in process);
5. renders every endpoint with Tinybird's template engine and parameter defaults, composes its
   nodes with Tinybird's `replace_tables`, runs it in ClickHouse (`final=1`: Petrel reads
   ReplacingMergeTree as FINAL) and compares the rows with Petrel's `GET /v0/pipes/NAME.json`.

Each endpoint ends as `equal`, `equal-empty`, `different`, `not served` (Petrel lists it broken
or answers an error) or `not checkable` (the reference could not render or run it; "both
error" counts those where Petrel answers an error too, e.g. a required parameter without a
default). A difference comes with the closest pair of rows and likely causes: materialized
pipes Petrel lists as broken, rows Petrel did not take, TTLs, LIMIT ties, any()/argMax picks.

Usage (runs itself under the chdb venv when started with another python):
    scripts/conformance.py [--projects a,b] [--endpoints x,y] [--rows 2000] [--seed 1]
                           [--petrel BIN] [--json FILE] [--max-different K] [--no-prune] [-v]
Exit code 0 unless the harness itself fails (or more than K endpoints differ).
"""

import argparse
import ast
import collections
import csv
import datetime as dt
import glob
import json
import math
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

TOOLS = os.environ.get("PETREL_TOOLS", os.path.expanduser("~/.cache/petrel/tools"))
CHDB_PYTHON = os.path.join(TOOLS, "venv", "bin", "python")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/petrel/target"))


def bootstrap():
    """Makes chdb and Tinybird's modules importable in this process.

    Runs again under the chdb venv's python when chdb is missing, then appends the tb-forward
    venv's site-packages (same Python version) at the end of sys.path. `lru` (lru-dict, a C
    extension the tinybird package imports but does not ship) is replaced by a plain dict.
    """
    os.environ["TZ"] = "UTC"
    try:
        import chdb  # noqa: F401
    except ImportError:
        if not os.environ.get("PETREL_CONFORMANCE_REEXEC") and os.path.exists(CHDB_PYTHON):
            os.environ["PETREL_CONFORMANCE_REEXEC"] = "1"
            os.execv(CHDB_PYTHON, [CHDB_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
        sys.exit(f"chdb is not importable; run scripts/test.sh once (expects {CHDB_PYTHON})")
    sites = glob.glob(os.path.join(TOOLS, "tb-forward", "lib", "python3*", "site-packages"))
    if not sites:
        sys.exit(f"the tinybird package is missing: expected the venv {TOOLS}/tb-forward")
    sys.path.append(sites[0])

    class LRU(dict):
        def __init__(self, size):
            super().__init__()
            self.size = size

        def get_size(self):
            return self.size

    sys.modules.setdefault("lru", types.SimpleNamespace(LRU=LRU))


bootstrap()
from chdb import session as chs  # noqa: E402
from tinybird.ch_utils.engine import engine_full_from_dict  # noqa: E402
from tinybird.datafile.common import DatafileKind, parse  # noqa: E402
from tinybird.sql_template import (  # noqa: E402
    get_template_and_variables,
    get_var_names_and_types,
    render_sql_template,
)
from tinybird.sql_toolset import get_left_table, replace_tables, sql_get_used_tables  # noqa: E402

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None)
STATUSES = ["equal", "equal-empty", "different", "not served", "not checkable"]
ERROR_LINE = re.compile(r"^(?:✗ )?(.*?\.(?:pipe|datasource|connection|incl)):(\d+):(\d+): (.*)$")
KAFKA_COLUMNS = [
    ("__value", "String"),
    ("__topic", "LowCardinality(String)"),
    ("__partition", "Int16"),
    ("__offset", "Int64"),
    ("__timestamp", "DateTime"),
    ("__key", "String"),
]


# --- The project model, read with Tinybird's parsers ---------------------------------------------


@dataclass
class Column:
    name: str
    type: str  # the full ClickHouse type (Nullable(..) included)
    jsonpath: str | None
    default: str | None  # "DEFAULT expr" / "MATERIALIZED expr" / None
    codec: str | None


@dataclass
class Datasource:
    name: str
    columns: list
    engine: str  # the ClickHouse ENGINE clause, keys included
    notes: list = field(default_factory=list)


@dataclass
class Node:
    name: str
    sql: str
    type: str | None
    target: str | None  # DATASOURCE of a materialized node, TARGET_DATASOURCE of a copy node


@dataclass
class Pipe:
    name: str
    nodes: list
    kind: str  # endpoint | materialized | copy | other
    published: int  # index of the endpoint / materialized / last node


@dataclass
class Project:
    name: str
    root: str
    classic: bool
    datasources: dict = field(default_factory=dict)
    pipes: dict = field(default_factory=dict)
    parse_errors: dict = field(default_factory=dict)

    def mv_pipes(self):
        """Target datasource → the materialized pipes that write to it."""
        out = collections.defaultdict(list)
        for p in self.pipes.values():
            if p.kind == "materialized":
                out[p.nodes[p.published].target].append(p.name)
        return out

    def endpoints(self):
        return sorted(n for n, p in self.pipes.items() if p.kind == "endpoint")


def parse_leniently(text, kind, basepath):
    """Tinybird's `parse`, dropping lines it rejects (deprecated Classic keywords, CREATE tokens)
    so that the schema of such files can still feed the reference. Returns (doc, dropped)."""
    lines = text.split("\n")
    dropped = []
    for _ in range(20):
        try:
            doc, _ = parse("\n".join(lines), default_node="default", basepath=basepath, kind=kind)
            return doc, dropped
        except Exception as e:
            m = re.search(r" at (\d+):\d+\.?$", str(e).strip())
            if not m or not (0 < int(m.group(1)) <= len(lines)):
                raise
            dropped.append(f"{str(e).splitlines()[0][:120]}")
            del lines[int(m.group(1)) - 1]
    raise ValueError("too many rejected lines")


def load_datasource(path):
    """A Datasource from a .datasource file: columns with full types, ClickHouse engine clause."""
    doc, dropped = parse_leniently(open(path).read(), DatafileKind.datasource, os.path.dirname(path))
    node = doc.nodes[0]
    cols = []
    for c in node.get("columns", []):
        ctype = c["type"]
        if c.get("nullable") and not ctype.startswith("Nullable("):
            ctype = f"Nullable({ctype})"
        cols.append(Column(c["name"], ctype, c.get("jsonpath"), c.get("default_value"), c.get("codec")))
    if any(k.startswith("kafka_") for k in node):  # Tinybird adds Kafka's metadata columns
        have = {c.name for c in cols}
        cols = [Column(n, t, None, None, None) for n, t in KAFKA_COLUMNS if n not in have] + cols
    eng = node.get("engine") or {"type": "MergeTree", "args": []}
    args = {k: v for k, v in eng["args"]}
    notes = [f"Tinybird rejects {len(dropped)} line(s), first: {dropped[0]}"] if dropped else []
    try:
        engine = engine_full_from_dict(eng["type"], args, columns=node.get("columns", []))
    except Exception as e:
        notes.append(f"engine not built ({e}); MergeTree used")
        engine = "MergeTree() ORDER BY tuple()"
    name = os.path.splitext(os.path.basename(path))[0]
    return Datasource(name, cols, engine, notes)


def load_pipe(path, classic):
    """A Pipe from a .pipe file: its nodes, its kind and the node it publishes or materializes."""
    doc, _ = parse_leniently(open(path).read(), DatafileKind.pipe, os.path.dirname(path))
    nodes = []
    for n in doc.nodes:
        ntype = (n.get("type") or "").lower() or None
        target = n.get("datasource") or n.get("target_datasource")
        if ntype is None and n.get("datasource"):
            ntype = "materialized"  # Classic: a DATASOURCE line alone materializes
        nodes.append(Node(n["name"], n.get("sql", ""), ntype, target))
    kind, published = "other", len(nodes) - 1
    for i, n in enumerate(nodes):
        if n.type in ("endpoint", "materialized", "copy"):
            kind, published = n.type, i
    if kind == "other" and classic and not any(n.type for n in nodes):
        kind = "endpoint"  # Classic: the last node of an untyped pipe is published
    return Pipe(os.path.splitext(os.path.basename(path))[0], nodes, kind, published)


def load_project(name, root, classic):
    """Every datasource and pipe under `root` (recursively), with the files that do not parse."""
    proj = Project(name, root, classic)
    for path in sorted(glob.glob(os.path.join(root, "**", "*.datasource"), recursive=True)):
        try:
            ds = load_datasource(path)
            proj.datasources[ds.name] = ds
        except Exception as e:
            proj.parse_errors[os.path.relpath(path, root)] = str(e)[:300]
    for path in sorted(glob.glob(os.path.join(root, "**", "*.pipe"), recursive=True)):
        try:
            p = load_pipe(path, classic)
            proj.pipes[p.name] = p
        except Exception as e:
            proj.parse_errors[os.path.relpath(path, root)] = str(e)[:300]
    return proj


def list_projects(corpus):
    """(name, folder, classic) for each corpus project; use-case-examples' folders are projects."""
    manifest = json.load(open(os.path.join(corpus, "MANIFEST.json")))
    out = []
    for entry in manifest:
        folder = entry["repo"].replace("/", "__")
        path = os.path.join(corpus, folder)
        classic = entry["format"] == "Classic"
        if not os.path.isdir(path):
            continue
        if folder == "tinybirdco__use-case-examples":
            for sub in sorted(os.listdir(path)):
                if os.path.isdir(os.path.join(path, sub)):
                    out.append((f"{folder}/{sub}", os.path.join(path, sub), classic))
        else:
            out.append((folder, path, classic))
    return out


# --- Vocabulary: the values that make filters and parameters hit data ----------------------------

LITERAL_EQ = re.compile(r"\b(\w+)\s*(?:==|=|!=|<>)\s*'((?:[^'\\]|\\.)*)'")
LITERAL_IN = re.compile(
    r"\b(\w+)\s+(?:NOT\s+)?IN\s*[\(\[]\s*('(?:[^'\\]|\\.)*'(?:\s*,\s*'(?:[^'\\]|\\.)*')*)\s*[\)\]]", re.I
)
NUMBER_EQ = re.compile(r"\b(\w+)\s*(?:==|=)\s*(-?\d+(?:\.\d+)?)\b")
PARAM_CMP = re.compile(r"\b(\w+)\s*(?:==|=|!=|<>|>=|<=|>|<|\bIN\b)\s*\{\{\s*(?:\w+\s*\(\s*)*(\w+)", re.I)


def norm(name):
    """A name compared loosely: `workspaceId` ~ `workspace_id`."""
    return name.replace("_", "").lower()


def flatten(obj, prefix="$"):
    """(jsonpath, value) pairs of a fixture row, nested objects as `$.a.b`."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}.{k}", v
            if isinstance(v, dict):
                yield from flatten(v, f"{prefix}.{k}")


def fixture_values(proj):
    """Counter of values per jsonpath (`$.col`) over the project's fixtures (ndjson and csv)."""
    values = collections.defaultdict(collections.Counter)
    for path in glob.glob(os.path.join(proj.root, "**", "*fixtures*", "*.*"), recursive=True):
        rows = []
        if path.endswith(".ndjson"):
            for line in open(path, errors="replace").read().splitlines()[:3000]:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        elif path.endswith(".csv"):
            ds = proj.datasources.get(os.path.splitext(os.path.basename(path))[0])
            names = [c.name for c in ds.columns] if ds else []
            for rec in list(csv.reader(open(path, errors="replace")))[:3000]:
                if rec != names[: len(rec)]:
                    rows.append(dict(zip(names, rec)))
        for row in rows:
            if isinstance(row, dict):
                for p, v in flatten(row):
                    key = json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else v
                    if key is not None:
                        values[p][key] += 1
    return values


def param_defaults(sql, node_name):
    """{param: [default and example values]} of a templated node, via Tinybird's own analysis."""
    out = collections.defaultdict(list)
    try:
        t, _, _ = get_template_and_variables(sql[1:], name=node_name)
        for v in get_var_names_and_types(t, node_id=node_name):
            for key in ("default", "example"):
                d = v.get(key)
                if d is None or isinstance(d, bool):
                    continue
                out[v["name"]] += default_values(d, str(v.get("type", "")).startswith("Array"))
    except Exception:
        pass
    return out


def default_values(d, is_array):
    """The values of a parameter default: an Array's `a,b` or `['a', 'b']` gives both."""
    if not is_array:
        return [d]
    if isinstance(d, (list, tuple)):
        items = list(d)
    else:
        text = str(d).strip()
        try:
            items = list(ast.literal_eval(text)) if text.startswith("[") else text.split(",")
        except (ValueError, SyntaxError):
            items = text.strip("[]").split(",")
    return [i.strip().strip("'\"") if isinstance(i, str) else i for i in items]


def vocabulary(proj):
    """Values per column name: pipe literals and associated parameter defaults (first, so they
    weigh most), then fixture values by frequency."""
    literals = collections.defaultdict(list)
    colnames = {c.name for ds in proj.datasources.values() for c in ds.columns}
    by_norm = collections.defaultdict(set)
    for c in colnames:
        by_norm[norm(c)].add(c)
    for pipe in proj.pipes.values():
        for node in pipe.nodes:
            sql = node.sql
            for col, lit in LITERAL_EQ.findall(sql):
                literals[col].append(lit)
            for col, lits in LITERAL_IN.findall(sql):
                literals[col] += re.findall(r"'((?:[^'\\]|\\.)*)'", lits)
            for col, num in NUMBER_EQ.findall(sql):
                literals[col].append(float(num) if "." in num else int(num))
            if sql.strip().startswith("%"):
                defaults = param_defaults(sql.strip(), node.name)
                links = collections.defaultdict(set)
                for col, param in PARAM_CMP.findall(sql):
                    links[param].add(col)
                for param, vals in defaults.items():
                    for col in links[param] | by_norm.get(norm(param), set()):
                        literals[col] += vals
    fixtures = fixture_values(proj)
    vocab = {}
    for col in colnames:
        vals = list(dict.fromkeys(literals.get(col, [])))
        for path, counter in fixtures.items():
            if path.rsplit(".", 1)[-1] == col:
                vals += [v for v, _ in counter.most_common(50) if v not in vals]
        vocab[col] = vals
    return vocab


# --- Row generation ------------------------------------------------------------------------------


def split_args(s):
    """Top-level comma-separated arguments of a type: `String, Array(UInt8)` → two parts."""
    parts, depth, cur, quote = [], 0, "", False
    for ch in s:
        if ch == "'":
            quote = not quote
        if not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + ([cur.strip()] if cur.strip() else [])


def unwrap(t, wrapper):
    """The inner type of `Wrapper(inner)`, else None."""
    t = t.strip()
    return t[len(wrapper) + 1 : -1] if t.startswith(wrapper + "(") and t.endswith(")") else None


ID_NAME = re.compile(r"(^id$|_id$|Id$|^id_|_ids?$|Ids$)")
TIME_NAME = re.compile(r"(timestamp|_at$|At$|^time$|^ts$|^date$|_date$|Date$)", re.I)


class Generator:
    """Seeded values for columns: skewed pools per column name, shared id pools, recent times."""

    def __init__(self, vocab, seed):
        self.vocab = vocab
        self.rng = random.Random(seed)
        self.ids = [f"id_{i}" for i in range(20)]
        self.uuids = [
            str(uuid.UUID(int=random.Random(seed + i).getrandbits(128), version=4)) for i in range(20)
        ]
        self.pools = {}

    def pool(self, col, numeric):
        """(values, cumulative weights) for a column: Zipf-like weights, vocabulary first."""
        key = (col, numeric)
        if key not in self.pools:
            vals = []
            for v in self.vocab.get(col, []):
                if numeric:
                    try:
                        v = float(v)
                        v = int(v) if v == int(v) else v
                    except (TypeError, ValueError):
                        continue
                elif not isinstance(v, str):
                    v = str(v)
                if v not in vals:
                    vals.append(v)
            if not numeric:
                if ID_NAME.search(col):
                    vals += [i for i in self.ids if i not in vals]
                elif len(vals) < 3:
                    vals += [f"{col}_{i}" for i in range(6)]
            weights = [1.0 / (i + 1) for i in range(len(vals))]
            cum, acc = [], 0.0
            for w in weights:
                acc += w
                cum.append(acc)
            self.pools[key] = (vals, cum)
        return self.pools[key]

    def pick(self, col, numeric=False):
        vals, cum = self.pool(col, numeric)
        return self.rng.choices(vals, cum_weights=cum)[0] if vals else None

    def time(self):
        return NOW - dt.timedelta(seconds=self.rng.randint(60, 7 * 86400 - 60))

    def value(self, t, col):
        """A value of ClickHouse type `t` for column `col` (JSON-ready), or raises on unknown."""
        t = t.strip()
        rng = self.rng
        if (inner := unwrap(t, "Nullable")) is not None:
            return None if rng.random() < 0.1 else self.value(inner, col)
        if (inner := unwrap(t, "LowCardinality")) is not None:
            return self.value(inner, col)
        if (inner := unwrap(t, "SimpleAggregateFunction")) is not None:
            return self.value(split_args(inner)[1], col)
        if (inner := unwrap(t, "Array")) is not None:
            return [self.value(inner, col) for _ in range(rng.randint(0, 3))]
        if (inner := unwrap(t, "Map")) is not None:
            k, v = split_args(inner)
            return {str(self.value(k, f"{col}_key")): self.value(v, col) for _ in range(rng.randint(0, 2))}
        if (inner := unwrap(t, "Tuple")) is not None:
            return [self.value(e.split(" ")[-1] if " " in e.strip() else e, col) for e in split_args(inner)]
        if t.startswith("Enum"):
            return rng.choice(re.findall(r"'((?:[^'\\]|\\.)*)'", t))
        if t.startswith("DateTime64"):
            prec = int(re.match(r"DateTime64\((\d+)", t).group(1)) if "(" in t else 3
            ts = self.time().strftime("%Y-%m-%d %H:%M:%S")
            return ts + ("." + "".join(str(rng.randint(0, 9)) for _ in range(prec)) if prec else "")
        if t.startswith("DateTime"):
            return self.time().strftime("%Y-%m-%d %H:%M:%S")
        if t in ("Date", "Date32"):
            return (NOW.date() - dt.timedelta(days=rng.randint(0, 6))).isoformat()
        if t in ("Bool", "Boolean"):
            return rng.random() < 0.25
        if t == "UUID":
            return rng.choice(self.uuids)
        if t == "IPv4":
            return f"10.0.0.{rng.randint(1, 20)}"
        if t == "IPv6":
            return f"::ffff:10.0.0.{rng.randint(1, 20)}"
        if m := re.fullmatch(r"(U?)Int(\d+)", t):
            return self.integer(col, m.group(1) == "U", int(m.group(2)))
        if t.startswith("Float") or t.startswith("Decimal"):
            v = self.pick(col, numeric=True) if rng.random() < 0.5 else None
            return v if v is not None else round(rng.uniform(0, 1000), 2)
        if t == "String" or t.startswith("FixedString"):
            s = self.pick(col)
            n = unwrap(t, "FixedString")
            return s[: int(n)] if n else s
        raise ValueError(f"no generator for type {t}")

    def integer(self, col, unsigned, bits):
        """Epoch times for time-named integers, small pools for ids and flags, skew elsewhere."""
        rng = self.rng
        if TIME_NAME.search(col) and bits >= 32:
            secs = int((self.time() - dt.datetime(1970, 1, 1)).total_seconds())
            return secs * 1000 + rng.randint(0, 999) if bits == 64 else secs
        if rng.random() < 0.7:
            v = self.pick(col, numeric=True)
            if isinstance(v, int) and (v >= 0 or not unsigned):
                return v
        if ID_NAME.search(col):
            return rng.randint(1, 20)
        if bits == 8:
            return rng.choice([0, 0, 0, 1])
        return rng.randint(0, 100 if bits == 16 else 1000)


def generated_columns(ds):
    """The columns rows carry: not aggregate states, not MATERIALIZED/ALIAS ones."""
    out = []
    for c in ds.columns:
        if c.type.startswith("AggregateFunction") or (c.default or "").split(" ")[0].upper() in (
            "MATERIALIZED",
            "ALIAS",
        ):
            continue
        out.append(c)
    return out


def generate_rows(ds, gen, n):
    """n rows (column name → value) for a landing datasource, plus columns it cannot generate."""
    cols, skipped = [], []
    for c in generated_columns(ds):
        try:
            gen.value(c.type, c.name)
            cols.append(c)
        except ValueError:
            skipped.append(c.name)
    owner = {}  # columns reading the same jsonpath get the same JSON value
    for c in cols:
        if c.jsonpath:
            owner.setdefault(c.jsonpath, c.name)
    src = {c.name: owner[c.jsonpath] if c.jsonpath else c.name for c in cols}
    rows = []
    for _ in range(n):
        row = {}
        for c in cols:
            row[c.name] = row[src[c.name]] if src[c.name] != c.name else gen.value(c.type, c.name)
        rows.append(row)
    return rows, skipped


def place(obj, segments, value):
    """Puts `value` at a jsonpath's segments in `obj`; `[:]` spreads an array over elements."""
    key, rest = segments[0], segments[1:]
    if rest and rest[0] == "[:]":
        if len(rest) == 1:
            obj[key] = value
            return
        items = obj.setdefault(key, [])
        for i, v in enumerate(value or []):
            while len(items) <= i:
                items.append({})
            place(items[i], rest[1:], v)
        return
    if not rest:
        obj[key] = value
    else:
        place(obj.setdefault(key, {}), rest, value)


def jsonpath_segments(path):
    """`$.a.b[:].c` → ['a', 'b', '[:]', 'c']; `$` → []."""
    segs = []
    for part in path.lstrip("$").split("."):
        if not part:
            continue
        if part.endswith("[:]"):
            segs += [part[:-3], "[:]"]
        else:
            segs.append(part.strip("[]'\""))
    return segs


def to_event(row, ds):
    """The NDJSON object Petrel receives for a row: shaped by the columns' jsonpaths. A root
    (`$`) column gets the compact JSON text of the rest of the object (row is updated to match)."""
    obj, roots = {}, []
    for c in ds.columns:
        if c.name not in row:
            continue
        segs = jsonpath_segments(c.jsonpath) if c.jsonpath else [c.name]
        if segs:
            place(obj, segs, row[c.name])
        else:
            roots.append(c.name)
    for name in roots:
        row[name] = json.dumps(obj, separators=(",", ":"))
    return obj


# --- Petrel --------------------------------------------------------------------------------------


class Petrel:
    """A `petrel local start` process on a copy of the project, with its admin token."""

    def __init__(self, binary, project_dir, work):
        self.binary, self.dir, self.work = binary, project_dir, work
        self.token = secrets.token_hex(20)
        self.proc, self.url = None, None
        self.load_errors = {}  # file stem → message, from a start that failed
        self.pruned = []  # files removed so that the server starts

    def start(self, prune=True, attempts=8):
        """Starts the server; when it exits on load errors, removes the failing files (if
        `prune`) and tries again. Returns True once listening."""
        for _ in range(attempts):
            if self._start_once():
                return True
            failing = self._failing_files()
            if not prune or not failing:
                return False
            for path in failing:
                if os.path.exists(path):
                    os.remove(path)
                    self.pruned.append(os.path.relpath(path, self.dir))
        return False

    def _start_once(self):
        data = tempfile.mkdtemp(dir=self.work, prefix="data-")
        self.out = os.path.join(self.work, "petrel.out")
        self.err = os.path.join(self.work, "petrel.err")
        env = dict(os.environ, PETREL_ADMIN_TOKEN=self.token)
        self.proc = subprocess.Popen(
            [self.binary, "local", "start", self.dir, "--port", "0", "--data", data, "--tick-ms", "10"],
            stdin=subprocess.DEVNULL,
            stdout=open(self.out, "w"),
            stderr=open(self.err, "w"),
            env=env,
            cwd=self.work,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            m = re.search(r"listening on (http://\S+)", open(self.out).read())
            if m:
                self.url = m.group(1).rstrip("/")
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        self.stop()
        return False

    def _failing_files(self):
        """Files named by the error lines of a failed start; records their messages."""
        files = []
        for line in open(self.err).read().splitlines():
            m = ERROR_LINE.match(line.strip())
            if m:
                path = m.group(1) if os.path.isabs(m.group(1)) else os.path.join(self.work, m.group(1))
                stem = os.path.splitext(os.path.basename(path))[0]
                self.load_errors.setdefault(
                    stem, f"{os.path.relpath(path, self.dir)}:{m.group(2)}:{m.group(3)}: {m.group(4)}"
                )
                files.append(path)
        return list(dict.fromkeys(files))

    def stderr_tail(self, n=5):
        return "\n".join(open(self.err).read().strip().splitlines()[-n:])

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method, path, body=None, timeout=120):
        """(status, parsed JSON or text) of an HTTP call with the admin token."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Authorization": f"Bearer {self.token}"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        except Exception as e:  # timeouts, resets
            return 0, f"{type(e).__name__}: {e}"
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def append(self, ds, lines, chunk=2_000_000):
        """Sends NDJSON lines in chunks with wait=true; returns (rows landed, quarantined, error)."""
        landed = quarantined = 0
        batch, size = [], 0
        for line in lines + [None]:
            if line is not None:
                batch.append(line)
                size += len(line) + 1
            if batch and (line is None or size > chunk):
                status, body = self.request(
                    "POST", f"/v0/events?name={ds}&wait=true", ("\n".join(batch) + "\n").encode()
                )
                if status != 200 or not isinstance(body, dict):
                    return landed, quarantined, f"HTTP {status}: {str(body)[:200]}"
                landed += body.get("successful_rows", 0)
                quarantined += body.get("quarantined_rows", 0)
                batch, size = [], 0
        return landed, quarantined, None

    def pipes(self):
        """name → {endpoint, error} as `GET /v0/pipes` lists them."""
        status, body = self.request("GET", "/v0/pipes")
        if status != 200 or not isinstance(body, dict):
            return {}
        return {p["name"]: p for p in body.get("pipes", [])}

    def read(self, pipe):
        """(data, meta, None) of `GET /v0/pipes/NAME.json` with no parameters, or (.., error)."""
        status, body = self.request("GET", f"/v0/pipes/{pipe}.json")
        if status == 200 and isinstance(body, dict) and "data" in body:
            return body["data"], [m["name"] for m in body.get("meta", [])], None
        err = body.get("error") if isinstance(body, dict) else body
        return None, None, f"HTTP {status}: {str(err)[:500]}"


# --- The reference: templates rendered by Tinybird, SQL run by ClickHouse ------------------------


def used_tables(sql):
    """Table names a query reads (Tinybird's parser), without table functions."""
    return {t[1] for t in sql_get_used_tables(sql, raising=True) if t[1]}


class Reference:
    """Renders and composes pipes the way Tinybird does, and runs them in one chdb session."""

    def __init__(self, proj):
        self.proj = proj
        self.sess = chs.Session()
        self.rendered = {}  # (pipe, node) → (sql, error)
        self.composed = {}  # pipe → (sql, error)
        self.broken_tables = {}  # datasource → why the reference holds no (or wrong) data
        self.mvs = []  # (pipe, target, table whose inserts fire it, tables it reads)
        self.external = {}  # materialized pipe → why it reads nothing here (tables outside the project)
        for s in (
            "session_timezone = 'UTC'",
            "output_format_json_quote_64bit_integers = 0",
            "output_format_json_quote_decimals = 0",
            "max_execution_time = 60",
        ):
            self.sess.query(f"SET {s}")

    def close(self):
        try:
            self.sess.close()
        except Exception:
            pass

    def render(self, pipe, node):
        """A node's SQL for a request without parameters (Tinybird's template engine)."""
        key = (pipe.name, node.name)
        if key not in self.rendered:
            sql = node.sql.strip()
            if sql.startswith("%"):
                try:
                    sql = render_sql_template(sql[1:], {}, name=node.name)[0]
                    self.rendered[key] = (sql, None)
                except Exception as e:
                    self.rendered[key] = (None, f"template ({node.name}): {type(e).__name__}: {e}")
            else:
                self.rendered[key] = (sql, None)
        return self.rendered[key]

    def compose(self, pipe_name, node_index=None, stack=()):
        """The SQL of a pipe's published node with the nodes and pipes it reads replaced by
        subqueries (Tinybird's replace_tables), or (None, error)."""
        pipe = self.proj.pipes[pipe_name]
        idx = pipe.published if node_index is None else node_index
        cache_key = (pipe_name, idx)
        if cache_key in self.composed:
            return self.composed[cache_key]
        if pipe_name in stack:
            return None, f"pipe cycle {' → '.join(stack + (pipe_name,))}"
        nodes = {n.name: n for n in pipe.nodes}
        root = pipe.nodes[idx]
        sql, err = self.render(pipe, root)
        replacements, todo, seen = {}, [(root.name, sql)], {root.name}
        while todo and not err:
            _, text = todo.pop()
            try:
                tables = used_tables(text)
            except Exception as e:
                err = f"harness: Tinybird's SQL parser rejects the query: {str(e)[:300]}"
                break
            for t in tables - seen:
                seen.add(t)
                if t in nodes:
                    sub, err = self.render(pipe, nodes[t])
                    if err:
                        break
                    replacements[t] = f"({sub})"
                    todo.append((t, sub))
                elif t in self.proj.pipes and t not in self.proj.datasources:
                    sub, err = self.compose(t, None, stack + (pipe_name,))
                    if err:
                        err = f"reads pipe {t}: {err}"
                        break
                    replacements[t] = f"({sub})"
        if not err and replacements:
            try:
                sql = replace_tables(sql, replacements)
            except Exception as e:
                err = f"harness: replace_tables failed: {str(e)[:300]}"
        result = (None, err) if err else (sql, None)
        self.composed[cache_key] = result
        return result

    def create_tables(self):
        """Every datasource as a table with its engine and keys from the datafile."""
        for ds in self.proj.datasources.values():
            cols = ", ".join(
                " ".join(filter(None, [f"`{c.name}`", c.type, c.default, c.codec])) for c in ds.columns
            )
            try:
                self.sess.query(f"CREATE TABLE `{ds.name}` ({cols}) ENGINE = {ds.engine}")
            except Exception as e:
                self.broken_tables[ds.name] = f"CREATE TABLE failed: {first_line(e)}"

    def create_views(self):
        """A MATERIALIZED VIEW .. TO target for each materialized pipe (before any insert). A
        pipe that reads only tables outside the project (other workspaces, old versions) is
        skipped: its target is then a landing datasource."""
        known = set(self.proj.datasources)
        for pipe in self.proj.pipes.values():
            if pipe.kind != "materialized":
                continue
            target = pipe.nodes[pipe.published].target
            sql, err = self.compose(pipe.name)
            if not err:
                try:
                    tables = {(t[0], t[1]) for t in sql_get_used_tables(sql, raising=True) if t[1]}
                    if tables and all(db or t not in known for db, t in tables):
                        self.external[pipe.name] = f"reads only tables outside the project: {sorted(tables)}"
                        continue
                    self.mvs.append((pipe.name, target, get_left_table(sql)[1], {t for _, t in tables}))
                    self.sess.query(f"CREATE MATERIALIZED VIEW `mv__{pipe.name}` TO `{target}` AS {sql}")
                except Exception as e:
                    err = f"CREATE MATERIALIZED VIEW failed: {first_line(e)}"
            if err:
                self.broken_tables[target] = f"materialized pipe {pipe.name}: {err}"

    def fed(self):
        """Target → tables its (created) materialized views read."""
        out = collections.defaultdict(set)
        for _, target, _, sources in self.mvs:
            out[target] |= sources
        return out

    def landing(self):
        """Datasources that receive rows: all but the targets of materialized pipes that read
        something in the project."""
        targets = {t for p, t, _, _ in self.mvs} | {
            t for t, pipes in self.proj.mv_pipes().items() if any(p not in self.external for p in pipes)
        }
        return sorted(n for n in self.proj.datasources if n not in targets)

    def landing_under(self, tables):
        """The landing tables whose rows reach these tables (through materialized views)."""
        fed, out, todo, seen = self.fed(), set(), list(tables), set()
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in fed:
                todo += list(fed[t])
            if t in self.proj.datasources and t not in fed:
                out.add(t)
        return out

    def insert(self, ds, rows):
        """Inserts rows (flat JSON objects) into a table; MVs fire. Returns an error or None."""
        if not rows:
            return None
        cols = ", ".join(f"`{c}`" for c in rows[0])
        for i in range(0, len(rows), 5000):
            body = "\n".join(json.dumps(r, separators=(",", ":")) for r in rows[i : i + 5000])
            try:
                self.sess.query(f"INSERT INTO `{ds}` ({cols}) FORMAT JSONEachRow\n{body}\n")
            except Exception as e:
                return f"INSERT failed: {first_line(e)}"
        return None

    def settle(self):
        """Applies TTLs (merges) and makes every read FINAL, as Petrel reads Replacing tables."""
        for ds in self.proj.datasources.values():
            if " TTL " in ds.engine:
                try:
                    self.sess.query(f"OPTIMIZE TABLE `{ds.name}` FINAL")
                except Exception:
                    pass
        self.sess.query("SET final = 1")

    def tainted(self, tables):
        """Why the reference data of these tables (or what feeds them) is incomplete, or None."""
        fed, todo, seen = self.fed(), list(tables), set()
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in self.broken_tables:
                return f"{t}: {self.broken_tables[t]}"
            todo += list(fed.get(t, ()))
        return None

    def query(self, sql):
        """(rows, column names, None) of a query in ClickHouse, or (None, None, error)."""
        try:
            res = self.sess.query(sql.strip().rstrip(";"), "JSON")
            text = res.bytes().decode(errors="replace") if hasattr(res, "bytes") else str(res)
            body = json.loads(text) if text.strip() else {"data": [], "meta": []}
            return body["data"], [m["name"] for m in body["meta"]], None
        except Exception as e:
            return None, None, f"ClickHouse: {first_line(e)}"


def first_line(e):
    return str(e).strip().splitlines()[0][:400] if str(e).strip() else type(e).__name__


# --- Comparison ----------------------------------------------------------------------------------


def canon(v):
    """A hashable, normalised value: numbers (and bools) as floats at 9 significant digits."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(f"{v:.9g}") if math.isfinite(v) else str(v)
    if isinstance(v, list):
        return tuple(canon(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, canon(x)) for k, x in v.items()))
    return v


def close(a, b):
    """Values equal up to a relative tolerance of 1e-6 on numbers."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-9)
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(close(x, y) for x, y in zip(a, b))
    return a == b


def row_key(row):
    return tuple(sorted((k, canon(v)) for k, v in row.items()))


def compare(petrel_rows, ch_rows, petrel_cols, ch_cols):
    """None when the row multisets agree (numbers within tolerance), else a short diff."""
    left = collections.Counter(row_key(r) for r in petrel_rows)
    right = collections.Counter(row_key(r) for r in ch_rows)
    only_p = list((left - right).elements())
    only_c = list((right - left).elements())
    for p in list(only_p):  # pair the leftovers within tolerance
        for i, c in enumerate(only_c):
            if len(p) == len(c) and all(a[0] == b[0] and close(a[1], b[1]) for a, b in zip(p, c)):
                only_p.remove(p)
                del only_c[i]
                break
    if not only_p and not only_c:
        return None
    parts = [f"rows petrel {len(petrel_rows)} vs clickhouse {len(ch_rows)}"]
    if sorted(petrel_cols or []) != sorted(ch_cols or []):
        parts.append(f"columns petrel {petrel_cols} vs clickhouse {ch_cols}")
    if only_p and only_c:  # the closest pair: the columns where they differ
        p = dict(only_p[0])
        c = dict(max(only_c, key=lambda r: sum(close(p.get(k), v) for k, v in r)))
        delta = {k: (p.get(k), c.get(k)) for k in sorted(set(p) | set(c)) if not close(p.get(k), c.get(k))}
        parts.append(
            f"{len(only_p)} rows only in petrel, {len(only_c)} only in clickhouse; closest pair "
            f"differs in (petrel, clickhouse) {delta}"[:500]
        )
    elif only_p:
        parts.append(f"only in petrel ({len(only_p)}), e.g. {dict(only_p[0])}"[:400])
    elif only_c:
        parts.append(f"only in clickhouse ({len(only_c)}), e.g. {dict(only_c[0])}"[:400])
    return "; ".join(parts)


# --- One project, end to end ---------------------------------------------------------------------


def insert_order(ref):
    """The landing datasources in an order where the tables a materialized view joins or looks
    up are filled before the table whose inserts fire it (ClickHouse MVs see other tables as
    they are at insert time)."""
    names = ref.landing()
    before = collections.defaultdict(set)  # table → tables to insert before it
    for _, _, left, sources in ref.mvs:
        for fired in ref.landing_under([left]):
            before[fired] |= ref.landing_under(sources - {left}) - {fired}
    ordered, placing = [], set()

    def place_table(n):
        if n not in placing:
            placing.add(n)
            for m in sorted(before[n] & set(names)):
                place_table(m)
            ordered.append(n)

    for n in names:
        place_table(n)
    return ordered


def check_endpoint(name, proj, ref, petrel, listing, ingest):
    """The classification of one endpoint, with the errors and the diff behind it."""
    t0 = time.time()
    out = {"pipe": name, "status": "not served", "petrel_error": None, "ch_error": None, "diff": None}
    item = listing.get(name) or {}
    if petrel.url is None:
        out["petrel_error"] = petrel.load_errors.get(name) or "the project does not start"
    elif name in petrel.load_errors:
        out["petrel_error"] = f"load: {petrel.load_errors[name]}"
    elif not item or item.get("error") or not item.get("endpoint"):
        out["petrel_error"] = item.get("error") or ("not listed" if not item else "not an endpoint")
    if out["petrel_error"]:
        return out
    sql, err = ref.compose(name)
    out["sql"] = sql
    tables = set()
    if not err:
        try:
            tables = used_tables(sql)
            err = ref.tainted(tables)
            err = f"reference data incomplete: {err}" if err else None
        except Exception:
            pass
    ch_rows = ch_cols = None
    if not err:
        ch_rows, ch_cols, err = ref.query(sql)
    p_rows, p_cols, p_err = petrel.read(name)
    out.update(ch_error=err, petrel_error=p_err, seconds=round(time.time() - t0, 2))
    if p_err and err:
        out.update(status="not checkable", note="both errored")
    elif err:
        out["status"] = "not checkable"
    elif not p_err:
        out.update(rows_petrel=len(p_rows), rows_clickhouse=len(ch_rows))
        out["diff"] = compare(p_rows, ch_rows, p_cols, ch_cols)
        if out["diff"] is None:
            out["status"] = "equal" if p_rows else "equal-empty"
        else:
            out["status"] = "different"
            out["causes"] = upstream_causes(tables, proj, ref, listing, ingest) + query_caveats(
                sql, tables, ref
            )
    return out


NONDETERMINISTIC = re.compile(
    r"\b(any|anyLast|groupArray|groupUniqArray|argMax|argMin|topK)(State|Merge|SimpleState|If)?\s*\(", re.I
)
SHORT_TTL = re.compile(
    r"toInterval(Hour|Minute|Second)\(|toIntervalDay\([1-7]\)|INTERVAL\s+([1-7]\s+DAY|\d+\s+(HOUR|MINUTE))",
    re.I,
)


def query_caveats(sql, tables, ref):
    """What may explain a difference: arbitrary picks (any, groupArray order, argMax ties), a
    LIMIT cutting ties, TTLs within the generated 7 days (ClickHouse dropped those rows at
    OPTIMIZE FINAL; Petrel should filter them), Replacing targets of materialized pipes."""
    out = []
    found = {m.group(1) for m in NONDETERMINISTIC.finditer(sql)}
    if found:
        out.append(f"uses {', '.join(sorted(found))}: ClickHouse may pick other rows or orders")
    if re.search(r"\bLIMIT\b", sql, re.I):
        out.append("the query has a LIMIT: ties may cut differently")
    fed, todo, seen = ref.fed(), list(tables), set()
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            ds = ref.proj.datasources.get(t)
            if ds and " TTL " in ds.engine and SHORT_TTL.search(ds.engine.split(" TTL ", 1)[1]):
                ttl = ds.engine.split(" TTL ", 1)[1].split(" SETTINGS ")[0]
                out.append(f"{t} has a TTL within the data's 7 days ({ttl}): ClickHouse dropped rows")
            if ds and ds.engine.startswith("ReplacingMergeTree") and t in fed:
                out.append(f"{t} is a ReplacingMergeTree filled by a materialized pipe (read as FINAL)")
            todo += list(fed.get(t, ()))
    return out


def upstream_causes(tables, proj, ref, listing, ingest):
    """What Petrel lacks under these tables: materialized pipes it lists as broken, landing
    datasources whose rows it did not all take."""
    causes, fed, writers = [], ref.fed(), proj.mv_pipes()
    todo, seen = list(tables), set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        for pipe in writers.get(t, []):
            err = (listing.get(pipe) or {}).get("error")
            if err:
                causes.append(f"{t} is materialized by {pipe}, broken in Petrel: {err[:150]}")
        info = ingest.get(t) or {}
        if info and (info.get("petrel_error") or info.get("petrel_rows") != info["rows"]):
            causes.append(
                f"Petrel took {info.get('petrel_rows')} of {info['rows']} rows of {t} "
                f"({info.get('petrel_quarantined')} quarantined) {info.get('petrel_error') or ''}"[:250]
            )
        todo += list(fed.get(t, ()))
    return causes


def run_project(name, root, classic, args, binary, tmp):
    """Runs one project; returns its report (dict)."""
    t0 = time.time()
    report = {"project": name, "notes": [], "endpoints": []}
    proj = load_project(name, root, classic)
    for f, e in proj.parse_errors.items():
        report["notes"].append(f"harness cannot parse {f}: {e}")
    for ds in proj.datasources.values():
        report["notes"] += [f"{ds.name}: {n}" for n in ds.notes]
    endpoints = [e for e in proj.endpoints() if not args.endpoints or e in args.endpoints]
    work = tempfile.mkdtemp(dir=tmp, prefix="p-")
    copy = os.path.join(work, "project")
    shutil.copytree(root, copy)
    petrel = Petrel(binary, copy, work)
    ref = Reference(proj)
    try:
        started = petrel.start(prune=not args.no_prune)
        report["started"] = started
        report["pruned"] = petrel.pruned
        report["load_errors"] = petrel.load_errors
        if not started:
            report["notes"].append(f"petrel does not start: {' | '.join(petrel.stderr_tail().splitlines())}")
        ref.create_tables()
        ref.create_views()
        report["notes"] += [
            f"reference skips materialized pipe {p}: {why}" for p, why in ref.external.items()
        ]
        gen = Generator(vocabulary(proj), args.seed)
        ingest = {}
        for ds_name in insert_order(ref):
            ds = proj.datasources[ds_name]
            rows, skipped = generate_rows(ds, gen, args.rows)
            events = [json.dumps(to_event(r, ds), separators=(",", ":")) for r in rows]
            info = {"rows": len(rows), "skipped_columns": skipped}
            t1 = time.time()
            if started:
                info["petrel_rows"], info["petrel_quarantined"], info["petrel_error"] = petrel.append(
                    ds_name, events
                )
            t2 = time.time()
            info["seconds_petrel"] = round(t2 - t1, 2)
            if ds_name not in ref.broken_tables:
                err = ref.insert(ds_name, rows)
                info["seconds_clickhouse"] = round(time.time() - t2, 2)
                if err:
                    ref.broken_tables[ds_name] = err
                    info["clickhouse_error"] = err
            ingest[ds_name] = info
        report["ingest"] = ingest
        report["reference_broken"] = dict(ref.broken_tables)
        report["seconds_to_ingest"] = round(time.time() - t0, 1)
        ref.settle()
        listing = petrel.pipes() if started else {}
        for ep in endpoints:
            report["endpoints"].append(check_endpoint(ep, proj, ref, petrel, listing, ingest))
    finally:
        petrel.stop()
        ref.close()
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.time() - t0, 1)
    return report


# --- Reporting and the command line --------------------------------------------------------------


def counts(endpoints):
    c = collections.Counter(e["status"] for e in endpoints)
    out = {s: c.get(s, 0) for s in STATUSES}
    out["both error"] = sum(1 for e in endpoints if e.get("note") == "both errored")
    return out


def summary_line(name, c, total):
    return (
        f"{name}: equal {c['equal'] + c['equal-empty']} (empty {c['equal-empty']}) / different "
        f"{c['different']} / not served {c['not served']} / not checkable {c['not checkable']} "
        f"(both error {c['both error']}) of {total} endpoints"
    )


def print_project(rep, verbose):
    """The project's line, its start state and the endpoints that differ (all with -v)."""
    c = counts(rep["endpoints"])
    state = ""
    if not rep.get("started"):
        state = " [does not start]"
    elif rep.get("pruned"):
        state = f" [starts only without {len(rep['pruned'])} failing file(s)]"
    print(summary_line(rep["project"], c, len(rep["endpoints"])) + state + f" ({rep['seconds']} s)")
    for e in rep["endpoints"]:
        if e["status"] == "different":
            causes = "".join(f" [{c}]" for c in e.get("causes", []))
            print(f"    different  {e['pipe']}: {e['diff']}{causes}")
        elif verbose and e["status"] in ("not served", "not checkable"):
            why = e["petrel_error"] if e["status"] == "not served" else e["ch_error"]
            print(f"    {e['status']:<13} {e['pipe']}: {str(why)[:300]}")
    if verbose:
        for n in rep["notes"]:
            print(f"    note: {' '.join(n.split())[:300]}")
        for ds, info in rep.get("ingest", {}).items():
            if info.get("petrel_error") or info.get("petrel_quarantined") or info.get("clickhouse_error"):
                print(f"    ingest {ds}: {info}")
    sys.stdout.flush()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(REPO), "shared", "corpus"))
    ap.add_argument("--petrel", default=os.path.join(TARGET, "debug", "petrel"))
    ap.add_argument("--projects", help="comma-separated names (or prefixes) of projects")
    ap.add_argument("--endpoints", help="comma-separated endpoint names")
    ap.add_argument("--rows", type=int, default=2000, help="rows per landing datasource")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write per-endpoint details to this file")
    ap.add_argument("--max-different", type=int, help="exit 1 when more endpoints differ")
    ap.add_argument(
        "--no-prune",
        action="store_true",
        help="when Petrel exits on load errors, report the project as not starting "
        "instead of removing the failing files and starting again",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    args.endpoints = set(args.endpoints.split(",")) if args.endpoints else None
    return args


def main():
    args = parse_args()
    t0 = time.time()
    projects = list_projects(args.corpus)
    if args.projects:
        wanted = args.projects.split(",")
        projects = [p for p in projects if any(p[0] == w or p[0].startswith(w) for w in wanted)]
    tmp = tempfile.mkdtemp(prefix="petrel-conformance-")
    binary = os.path.join(tmp, "petrel")
    shutil.copy2(args.petrel, binary)  # the original may be rebuilt while we run
    reports = []
    try:
        for name, root, classic in projects:
            rep = run_project(name, root, classic, args, binary, tmp)
            reports.append(rep)
            print_project(rep, args.verbose)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    all_eps = [e for r in reports for e in r["endpoints"]]
    total = counts(all_eps)
    print(summary_line("total", total, len(all_eps)) + f" ({round(time.time() - t0, 1)} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"total": total, "projects": reports, "seed": args.seed, "rows": args.rows},
                f,
                indent=1,
                default=str,
            )
    if args.max_different is not None and total["different"] > args.max_different:
        sys.exit(1)


if __name__ == "__main__":
    main()
