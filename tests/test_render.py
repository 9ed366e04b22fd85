"""rxbot.draw.render: the drawn graph is checked node by node and edge by edge.

The DOT source is laid out by Graphviz (the one bundled with pygraphviz, as rxbot itself
does: no system ``dot`` is needed or used) as JSON and the drawn text is read back; the
files rxbot writes are checked by parsing the DOT source they contain. Both readers
return the same structure (checked by ``test_json_and_source_readers_agree``).
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Set, Tuple

import graphviz
import pygraphviz
import pytest
import reactivex.operators as rx_ops

from rxbot import (BlockedJoin, BotFrame, Branch, Filter, Fork, Join, Loop, Pipe, Return, Step, config,
                   Timer)
from rxbot.draw.render import INSTALL_HINT, KINDS, build_graph, rate_text, render, to_svg


# ---------------------------------------------------------------------------- readers
@dataclass
class Graph:
    nodes: Dict[str, str] = field(default_factory=dict)            # name -> drawn label
    edges: Set[Tuple[str, str, Optional[str]]] = field(default_factory=set)  # (tail, head, label)
    clusters: Dict[str, str] = field(default_factory=dict)         # cluster name -> label
    parent: Dict[str, Optional[str]] = field(default_factory=dict)  # node/cluster -> cluster
    edge_attrs: Dict[Tuple[str, str], Dict[str, str]] = field(default_factory=dict)


def _unescape(text: str) -> str:
    """DOT escString -> the text drawn (only the escapes render.py produces)."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def read_json(source: str) -> Graph:
    """Lay out with Graphviz's dot layout (JSON output) and read back names, drawn texts,
    edges and clusters."""
    data = json.loads(pygraphviz.AGraph(string=source).draw(format="json", prog="dot"))
    g = Graph()
    objs = data.get("objects", [])
    by_id = {o["_gvid"]: o for o in objs}
    clusters = [o for o in objs if "nodes" in o or "subgraphs" in o or o["name"].startswith("cluster")]
    for o in objs:
        if o in clusters:
            g.clusters[o["name"]] = o.get("label", "")
            continue
        texts = [op["text"] for op in o.get("_ldraw_", []) if op.get("op") == "T"]
        g.nodes[o["name"]] = "\n".join(texts)
    # a node's / cluster's parent is the innermost cluster holding it
    for c in clusters:
        for sub in c.get("subgraphs", []):
            g.parent[by_id[sub]["name"]] = c["name"]
    for c in clusters:
        g.parent.setdefault(c["name"], None)
    def depth(name: Optional[str]) -> int:
        return 0 if name is None else 1 + depth(g.parent[name])
    for c in sorted(clusters, key=lambda c: depth(c["name"])):
        for n in c.get("nodes", []):
            g.parent[by_id[n]["name"]] = c["name"]
    for e in data.get("edges", []):
        tail, head = by_id[e["tail"]]["name"], by_id[e["head"]]["name"]
        # once one edge has a label, dot gives every edge one ('' when unset)
        label = _unescape(e["label"]) if e.get("label") else None
        g.edges.add((tail, head, label))
        g.edge_attrs[(tail, head)] = {k: v for k, v in e.items() if not k.startswith("_")}
    return g


_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s\[\]=";{}]+)')


def _attrs(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for m in re.finditer(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s\]]+))', text):
        out[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


def _id(tok: re.Match) -> str:
    return tok.group(1).replace('\\"', '"') if tok.group(1) is not None else tok.group(2)


def read_source(source: str) -> Graph:
    """Parse the DOT source the graphviz package writes (one statement per line)."""
    g = Graph()
    stack: list = []
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith(("graph [", "node [", "edge [")):
            continue
        if line.endswith("{"):
            if line.startswith("subgraph"):
                name = _id(_TOKEN.search(line, len("subgraph")))
                g.clusters[name] = ""
                g.parent[name] = stack[-1] if stack else None
                stack.append(name)
            continue
        if line == "}":
            if stack:
                stack.pop()
            continue
        first = _TOKEN.match(line)
        rest = line[first.end():].strip()
        if rest.startswith("->"):
            second = _TOKEN.search(rest, 2)
            attrs = _attrs(rest[second.end():])
            tail, head = _id(first), _id(second)
            label = _unescape(attrs["label"]) if "label" in attrs else None
            g.edges.add((tail, head, label))
            g.edge_attrs[(tail, head)] = attrs
        elif rest.startswith("["):
            attrs = _attrs(rest)
            g.nodes[_id(first)] = _unescape(attrs.get("label", _id(first)))
            g.parent[_id(first)] = stack[-1] if stack else None
        else:  # a subgraph's own attributes: 'color=... label="Pipe 1" style=...'
            attrs = _attrs(line)
            if stack and "label" in attrs:
                g.clusters[stack[-1]] = _unescape(attrs["label"])
    return g


def graph_of(*pipes, report=None) -> Graph:
    """The drawn graph, without its legend (tested on its own)."""
    return read_json(build_graph(pipes, report, legend=False).source)


def chain(*names: str) -> Set[Tuple[str, str, Optional[str]]]:
    return {(a, b, None) for a, b in zip(names, names[1:])}


def double(x):
    return x * 2


def triple(x):
    return x * 3


def is_even(x):
    return x % 2 == 0


async def atriple(x):
    return x * 3


# ---------------------------------------------------------------------------- shapes
def test_linear_pipe_labels_and_edges():
    lam = lambda x: x  # noqa: E731
    line = lam.__code__.co_firstlineno
    p = Pipe(Loop(range(10)), double, lam, "a constant much longer than thirty characters",
             rx_ops.buffer_with_count(3), Timer(delay=2))
    g = graph_of(p)
    assert g.nodes == {
        "P1[1]": "Loop(range(0, 10))",
        "P1[2]": "double",
        "P1[3]": f"<lambda> line {line}",
        "P1[4]": "'a constant much longer tha...'",
        "P1[5]": "rx.buffer_with_count(3)",
        "P1[6]": "Timer(2s)",
    }
    assert g.edges == chain("P1[1]", "P1[2]", "P1[3]", "P1[4]", "P1[5]", "P1[6]")
    assert g.clusters == {"cluster_P1": "Pipe 1"}
    assert {n: g.parent[n] for n in g.nodes} == {n: "cluster_P1" for n in g.nodes}


def test_branch_share_true_join_false():
    g = graph_of(Pipe(Loop([1]), Branch(double), triple))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Branch", "P1[2]/1[1]": "double",
                       "P1[3]": "triple"}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", None),
                       ("P1[2].split", "P1[3]", "all")}
    assert g.clusters["cluster_P1[2]"] == "Branch  share=True join=False"
    assert g.parent["P1[2].split"] == g.parent["P1[2]/1[1]"] == "cluster_P1[2]"
    assert g.parent["cluster_P1[2]"] == "cluster_P1"
    assert g.parent["P1[3]"] == "cluster_P1"


def test_branch_share_false_is_labelled_unmatched():
    g = graph_of(Pipe(Loop([1]), Branch(double, route_type=int, share=False), triple))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Branch(int)", "P1[2]/1[1]": "double",
                       "P1[3]": "triple"}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", "matched"),
                       ("P1[2].split", "P1[3]", "unmatched")}
    assert g.clusters["cluster_P1[2]"] == "Branch  share=False join=False"
    assert g.edge_attrs[("P1[2].split", "P1[3]")]["style"] == "dashed"


def test_return_joins_back_with_unmatched_bypass():
    g = graph_of(Pipe(Loop([1]), Return(double, triple, route_func=is_even), print))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Return(is_even)",
                       "P1[2]/1[1]": "double", "P1[2]/1[2]": "triple", "P1[2].join": "join",
                       "P1[3]": "print"}
    assert g.edges == {
        ("P1[1]", "P1[2].split", None),
        ("P1[2].split", "P1[2]/1[1]", "matched"), ("P1[2]/1[1]", "P1[2]/1[2]", None),
        ("P1[2]/1[2]", "P1[2].join", None),
        ("P1[2].split", "P1[2].join", "unmatched"),
        ("P1[2].join", "P1[3]", None),
    }
    assert g.clusters["cluster_P1[2]"] == "Return  share=False join=True"
    assert g.parent["P1[2].join"] == "cluster_P1[2]"


def test_filter_is_one_node_passing_matched_items():
    g = graph_of(Pipe(Loop([1]), Filter(route_type=int, route_func=is_even), double))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2]": "Filter(int, is_even)", "P1[3]": "double"}
    assert g.edges == {("P1[1]", "P1[2]", None), ("P1[2]", "P1[3]", "matched")}
    assert g.clusters == {"cluster_P1": "Pipe 1"}


def test_fork_without_join_discards_branch_output():
    g = graph_of(Pipe(Loop([1]), Fork(double, triple), print))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Fork", "P1[2]/1[1]": "double",
                       "P1[2]/2[1]": "triple", "P1[3]": "print"}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", None),
                       ("P1[2].split", "P1[2]/2[1]", None), ("P1[2].split", "P1[3]", "all")}
    assert g.clusters["cluster_P1[2]"] == "Fork  share=True join=False"


def test_fork_with_join_merges_branches_and_shared_items():
    g = graph_of(Pipe(Loop([1]), Fork(double, triple, join=True), print))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Fork", "P1[2]/1[1]": "double",
                       "P1[2]/2[1]": "triple", "P1[2].join": "join", "P1[3]": "print"}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", None),
                       ("P1[2].split", "P1[2]/2[1]", None), ("P1[2].split", "P1[2].join", "all"),
                       ("P1[2]/1[1]", "P1[2].join", None), ("P1[2]/2[1]", "P1[2].join", None),
                       ("P1[2].join", "P1[3]", None)}
    assert g.clusters["cluster_P1[2]"] == "Fork  share=True join=True"


def test_join_with_multi_step_branch():
    g = graph_of(Pipe(Loop([1]), Join(double, Pipe(triple, double)), print))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Join", "P1[2]/1[1]": "double",
                       "P1[2]/2[1]": "triple", "P1[2]/2[2]": "double", "P1[2].join": "join",
                       "P1[3]": "print"}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", None),
                       ("P1[2].split", "P1[2]/2[1]", None), ("P1[2]/2[1]", "P1[2]/2[2]", None),
                       # a Join matching every item has no unmatched ones: no bypass
                       ("P1[2]/1[1]", "P1[2].join", None), ("P1[2]/2[2]", "P1[2].join", None),
                       ("P1[2].join", "P1[3]", None)}
    assert g.clusters["cluster_P1[2]"] == "Join  share=False join=True"


def test_blocked_join_zips_branches_in_argument_order():
    g = graph_of(Pipe(Loop([1]), BlockedJoin(double, Step(atriple, name="slow triple")), print))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "BlockedJoin", "P1[2]/1[1]": "double",
                       "P1[2]/2[1]": "slow triple", "P1[2].zip": "zip → tuple", "P1[3]": "print"}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", None),
                       ("P1[2].split", "P1[2]/2[1]", None),
                       ("P1[2]/1[1]", "P1[2].zip", "1"), ("P1[2]/2[1]", "P1[2].zip", "2"),
                       ("P1[2].zip", "P1[3]", None)}
    assert g.clusters["cluster_P1[2]"] == "BlockedJoin  share=False join=True"
    assert g.parent["P1[2].zip"] == "cluster_P1[2]"


def test_route_as_last_step_points_its_bypass_at_an_end_marker():
    g = graph_of(Pipe(Loop([1]), Branch(print)))
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2].split": "Branch", "P1[2]/1[1]": "print",
                       "P1.end": ""}
    assert g.edges == {("P1[1]", "P1[2].split", None), ("P1[2].split", "P1[2]/1[1]", None),
                       ("P1[2].split", "P1.end", "all")}


def test_three_level_nest_fork_branch_join():
    p = Pipe(Loop([1, 2]), Fork(Branch(Join(double, triple), route_type=int), triple), print)
    g = graph_of(p)
    fork, br, jn = "P1[2]", "P1[2]/1[1]", "P1[2]/1[1]/1[1]"
    assert g.nodes == {
        "P1[1]": "Loop(list[2])",
        f"{fork}.split": "Fork",
        f"{br}.split": "Branch(int)",
        f"{jn}.split": "Join",
        f"{jn}/1[1]": "double",
        f"{jn}/2[1]": "triple",
        f"{jn}.join": "join",
        f"{fork}/2[1]": "triple",
        "P1[3]": "print",
    }
    assert g.edges == {
        ("P1[1]", f"{fork}.split", None),
        (f"{fork}.split", f"{br}.split", None),
        (f"{br}.split", f"{jn}.split", "matched"),
        (f"{jn}.split", f"{jn}/1[1]", None),
        (f"{jn}.split", f"{jn}/2[1]", None),
        (f"{jn}/1[1]", f"{jn}.join", None),
        (f"{jn}/2[1]", f"{jn}.join", None),
        (f"{fork}.split", f"{fork}/2[1]", None),
        (f"{fork}.split", "P1[3]", "all"),
    }
    assert g.clusters == {
        "cluster_P1": "Pipe 1",
        f"cluster_{fork}": "Fork  share=True join=False",
        f"cluster_{br}": "Branch  share=True join=False",
        f"cluster_{jn}": "Join  share=False join=True",
    }
    assert g.parent[f"cluster_{jn}"] == f"cluster_{br}"
    assert g.parent[f"cluster_{br}"] == f"cluster_{fork}"
    assert g.parent[f"cluster_{fork}"] == "cluster_P1"
    assert g.parent[f"{jn}/1[1]"] == f"cluster_{jn}"
    assert g.parent[f"{fork}/2[1]"] == f"cluster_{fork}"


def test_two_pipes_in_one_picture():
    first = Pipe(Loop([1]), double)
    second = Pipe(Timer(delay=0.5, max_time=3), print, name="ticker")
    g = graph_of(first, second)
    assert g.nodes == {"P1[1]": "Loop(list[1])", "P1[2]": "double",
                       "P2[1]": "Timer(0.5s, max_time=3)", "P2[2]": "print"}
    assert g.edges == chain("P1[1]", "P1[2]") | chain("P2[1]", "P2[2]")
    assert g.clusters == {"cluster_P1": "Pipe 1", "cluster_P2": "Pipe 2: ticker"}
    assert g.parent["P2[1]"] == "cluster_P2" and g.parent["P1[2]"] == "cluster_P1"


def test_labels_are_shown_literally():
    # '<lambda>'-like text is not an HTML label, backslashes and quotes survive (read from
    # the SVG: Graphviz's JSON writer escapes a backslash twice)
    p = Pipe(Loop([1]), Step(double, name='<odd> "name" a\\b'), "x\\ny")
    texts = svg_texts(to_svg([p], legend=False))
    assert '<odd> "name" a\\b' in texts
    assert "'x\\\\ny'" in texts


def test_json_and_source_readers_agree():
    p = Pipe(Loop([1]), Fork(Return(double, route_type=int), BlockedJoin(double, triple)),
             Branch(print, share=False), Filter(route_type=int))
    source = build_graph([p], legend=False).source
    a, b = read_json(source), read_source(source)
    assert a.nodes == b.nodes and a.edges == b.edges and a.clusters == b.clusters
    assert a.parent == b.parent


# ---------------------------------------------------------------------------- errors
def test_bad_arguments_are_named():
    p = Pipe(Loop([1]), double)
    with pytest.raises(ValueError, match="argument 'format' must be one of png, svg, pdf, dot; got 'gif'"):
        render([p], "x", format="gif")
    with pytest.raises(ValueError, match=r"ends in '\.png' but format='svg'"):
        render([p], "x.png", format="svg")
    with pytest.raises(ValueError, match="no pipes to draw"):
        render([], "x.png")
    with pytest.raises(TypeError, match="must hold Pipe objects; got int"):
        build_graph([1])


# ---------------------------------------------------------------------------- files
SVG_NS = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def svg_texts(svg: str) -> Set[str]:
    return {t.text for t in ET.fromstring(svg).iter(f"{SVG_NS}text")}


def test_pictures_render_with_path_reduced_to_the_interpreter_bin(tmp_path):
    """No system Graphviz: PATH holds only the interpreter's folder (no 'dot' there), and
    SVG, PNG and PDF are still real pictures."""
    bindir = os.path.dirname(sys.executable)
    assert graphviz_dot_in(bindir) is None
    code = textwrap.dedent(f"""
        import shutil, sys
        from rxbot import Fork, Loop, Pipe
        from rxbot.draw.render import render
        assert shutil.which("dot") is None, "a dot program is on PATH"
        p = Pipe(Loop([1]), Fork(abs, str, join=True), print)
        for name in ("g.svg", "g.png", "g.pdf"):
            print(render([p], {str(tmp_path)!r} + "/" + name))
    """)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": bindir, "PYTHONPATH": repo, "HOME": os.environ.get("HOME", "/tmp")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    assert proc.stdout.split() == [str(tmp_path / n) for n in ("g.svg", "g.png", "g.pdf")]
    assert sorted(os.listdir(tmp_path)) == ["g.pdf", "g.png", "g.svg"]  # nothing else written
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"
    root = ET.parse(tmp_path / "g.svg").getroot()
    assert root.tag == f"{SVG_NS}svg"
    texts = {t.text for t in root.iter(f"{SVG_NS}text")}
    assert {"Pipe 1", "Loop(list[1])", "Fork", "abs", "str", "join", "print", "all", "legend"} <= texts


def graphviz_dot_in(folder: str):
    import shutil

    return shutil.which("dot", path=folder)


def png_size(data: bytes) -> Tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_has_a_readable_resolution(tmp_path):
    """144 dpi: the PNG is twice the picture's size in points (72 per inch)."""
    p = Pipe(Loop([1]), double, triple)
    out = p.render(str(tmp_path / "g.png"))
    width, height = png_size((tmp_path / "g.png").read_bytes())
    root = ET.fromstring(to_svg([p]))
    points = float(root.get("width").rstrip("pt")), float(root.get("height").rstrip("pt"))
    assert out == str(tmp_path / "g.png")
    assert abs(width - 2 * points[0]) <= 4 and abs(height - 2 * points[1]) <= 4


def test_each_extension_writes_that_picture_only(tmp_path):
    p = Pipe(Loop([1]), Fork(double, triple, join=True), print)
    png = p.render(str(tmp_path / "g.png"))
    svg = p.render(str(tmp_path / "g.svg"))
    pdf = p.render(str(tmp_path / "g.PDF"))
    assert (png, svg, pdf) == (str(tmp_path / "g.png"), str(tmp_path / "g.svg"), str(tmp_path / "g.PDF"))
    assert sorted(os.listdir(tmp_path)) == ["g.PDF", "g.png", "g.svg"]
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "g.PDF").read_bytes()[:5] == b"%PDF-"
    texts = svg_texts((tmp_path / "g.svg").read_text())
    assert {"Pipe 1", "Loop(list[1])", "Fork", "double", "triple", "join", "print", "all"} <= texts


def test_unknown_extension_is_a_clear_error(tmp_path):
    p = Pipe(Loop([1]), double)
    with pytest.raises(ValueError, match=r"argument 'path' ends in '\.jpg', which is not a format rxbot "
                                         r"draws \(png, svg, pdf, dot\)"):
        p.render(str(tmp_path / "x.jpg"))
    assert os.listdir(tmp_path) == []
    # with an explicit format the name is kept whole (graphviz's convention)
    assert p.render(str(tmp_path / "x.v2"), format="svg") == (str(tmp_path / "x.v2"), str(tmp_path / "x.v2.svg"))


def test_path_without_extension_writes_source_and_png(tmp_path):
    Pipe(Loop([1]), double)
    out = BotFrame.render(str(tmp_path / "graph"))
    assert out == (str(tmp_path / "graph"), str(tmp_path / "graph.png"))
    assert (tmp_path / "graph.png").read_bytes()[:8] == PNG_MAGIC
    drawn = read_source((tmp_path / "graph").read_text()).nodes
    assert {k: v for k, v in drawn.items() if not k.startswith("legend.")} == {
        "P1[1]": "Loop(list[1])", "P1[2]": "double"}
    out = BotFrame.render(str(tmp_path / "graph2"), format="svg")
    assert out == (str(tmp_path / "graph2"), str(tmp_path / "graph2.svg"))
    assert ET.parse(out[1]).getroot().tag.endswith("svg")
    assert sorted(os.listdir(tmp_path)) == ["graph", "graph.png", "graph2", "graph2.svg"]


def test_dot_format_writes_source_only(tmp_path):
    p = Pipe(Loop([1]), double)
    out = p.render(str(tmp_path / "g.dot"), legend=False)
    assert out == str(tmp_path / "g.dot")
    assert os.listdir(tmp_path) == ["g.dot"]
    assert read_source((tmp_path / "g.dot").read_text()).edges == chain("P1[1]", "P1[2]")
    out = p.render(str(tmp_path / "h"), format="dot")
    assert out == str(tmp_path / "h")
    assert sorted(os.listdir(tmp_path)) == ["g.dot", "h"]


def no_graphviz(monkeypatch, tmp_path) -> None:
    """A machine with neither pygraphviz nor a 'dot' program."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setitem(sys.modules, "pygraphviz", None)  # 'import pygraphviz' fails


def test_without_any_graphviz_writes_source_and_says_how_to_get_it(tmp_path, monkeypatch):
    no_graphviz(monkeypatch, tmp_path)
    p = Pipe(Loop([1]), double)
    with pytest.warns(RuntimeWarning) as caught:
        out = p.render(str(tmp_path / "g.svg"))
    assert out == str(tmp_path / "g.dot")
    assert sorted(os.listdir(tmp_path)) == ["empty-bin", "g.dot"]
    message = str(caught[0].message)
    assert INSTALL_HINT in message and "pip install pygraphviz" in message
    assert "apt-get install graphviz" in message and str(tmp_path / "g.dot") in message
    drawn = read_source((tmp_path / "g.dot").read_text()).nodes
    assert drawn["P1[1]"] == "Loop(list[1])" and drawn["P1[2]"] == "double"
    # without an extension: the source is 'path' itself, no picture
    with pytest.warns(RuntimeWarning, match="pip install pygraphviz"):
        out = BotFrame.render(str(tmp_path / "plain"))
    assert out == str(tmp_path / "plain")
    assert not (tmp_path / "plain.png").exists()


def test_asking_for_a_missing_engine_falls_back_to_the_source(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    p = Pipe(Loop([1]), double)
    with pytest.warns(RuntimeWarning, match=r"engine='dot'"):
        assert p.render(str(tmp_path / "g.svg"), engine="dot") == str(tmp_path / "g.dot")
    with pytest.raises(ValueError, match="argument 'engine' must be one of auto, pygraphviz, dot; got 'neato'"):
        p.render(str(tmp_path / "g.svg"), engine="neato")


def test_rendering_neither_runs_nor_consumes_the_pipes(tmp_path):
    seen = []

    def numbers():
        for i in range(4):
            seen.append(i)
            yield i

    out: list = []
    p = Pipe(Loop(numbers()), double, out.append)
    BotFrame.render(str(tmp_path / "g.dot"))
    assert seen == [] and out == []
    assert BotFrame.pipes() == [p]
    BotFrame.run()
    assert out == [0, 2, 4, 6]


def test_viewer_opens_only_when_asked(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(graphviz, "view", lambda path, quiet=False: opened.append(path))
    p = Pipe(Loop([1]), double)
    p.render(str(tmp_path / "a.dot"))
    p.render(str(tmp_path / "a.svg"))
    assert opened == []
    p.render(str(tmp_path / "b.svg"), view=True)
    assert opened == [str(tmp_path / "b.svg")]


# ---------------------------------------------------------------------------- counts
def counts_of(g: Graph, report) -> Dict[str, str]:
    """Node labels with their throughput line checked and removed: a node whose label
    shows ``in=``/``out=`` ends with max(in, out) over the run's seconds (a route's:
    max(in, matched), its own counters)."""
    out = {}
    for name, label in g.nodes.items():
        lines = label.split("\n")
        m = re.match(r"in=(\d+) out=(\d+|-)(?: matched=(\d+))?", lines[1]) if len(lines) > 1 else None
        if m:
            second = m.group(3) if m.group(3) is not None else m.group(2)
            assert lines[2] == rate_text(max(int(m.group(1)), int(second)), report.seconds), label
            lines = lines[:2]
        out[name] = "\n".join(lines)
    return out


def inline_raise(label: str, counts: str) -> str:
    """The label of an inline sync step under the 'raise' policy with metrics off: fused,
    its in/out are not counted (that costs time; see ``config.metrics``), so only failures
    and drops show; the unfused graph (``config.fusion = False``) counts every call."""
    from rxbot import config

    return f"{label}\nin=- out=-" if config.fusion else f"{label}\n{counts}"


def test_run_report_counts_land_on_their_nodes(tmp_path):
    out: list = []

    def bad(x):
        if x == 4:
            raise ValueError("four")
        return x

    p = Pipe(Loop(range(5)), Step(bad, on_error="ignore"), Fork(double, atriple, join=True),
             BlockedJoin(double, atriple), out.append)
    BotFrame.run()
    assert len(out) == 12
    g = graph_of(p, report=p.report)
    assert g.clusters["cluster_P1"] == f"Pipe 1  (run {p.report.seconds:.2f} s)"
    assert counts_of(g, p.report) == {
        "P1[1]": "Loop(range(0, 5))\nin=1 out=5",
        # a non-'raise' policy turns counting on for its inline segment
        "P1[2]": "bad\nin=5 out=4 failed=1 dropped=1",
        # a route: what went on (4 shared + 8 back; unknown when 'double' is not counted)
        # and what it matched
        "P1[3].split": "Fork\nin=4 out=- matched=4" if config.fusion else "Fork\nin=4 out=12 matched=4",
        "P1[3]/1[1]": inline_raise("double", "in=4 out=4"),
        "P1[3]/2[1]": "atriple\nin=4 out=4",
        "P1[3].join": "join",
        "P1[4].split": "BlockedJoin\nin=12 out=12",
        # a BlockedJoin with an async step counts every step in it, sync ones too
        "P1[4]/1[1]": "double\nin=12 out=12",
        "P1[4]/2[1]": "atriple\nin=12 out=12",
        "P1[4].zip": "zip → tuple",
        "P1[5]": inline_raise("list.append", "in=12 out=0 consumed=12"),
    }
    # the failing step is outlined in red
    assert 'color="#dc2626"' in build_graph([p], p.report).source
    # and the picture itself shows the numbers
    written = p.render(str(tmp_path / "run.svg"), report=p.report)
    texts = svg_texts((tmp_path / "run.svg").read_text())
    assert written == str(tmp_path / "run.svg")
    assert {"in=12 out=12", "in=5 out=4 failed=1 dropped=1", "had failures",
            rate_text(12, p.report.seconds)} <= texts


def test_sync_async_and_boosted_steps_look_different_and_the_legend_says_so():
    p = Pipe(Loop([1]), double, atriple, Step(triple, boost="thread"), "const",
             rx_ops.map(double), Filter(route_type=int), Return(double))
    source = build_graph([p]).source
    g = read_source(source)
    attrs = {name: _attrs(line) for line in source.splitlines()
             for name in [line.strip().split(" ", 1)[0].strip('"')] if "[label=" in line and "->" not in line}
    look = {n: (attrs[n].get("shape"), attrs[n].get("fillcolor")) for n in g.nodes}
    sync, asynchronous, boosted = look["P1[2]"], look["P1[3]"], look["P1[4]"]
    assert len({sync, asynchronous, boosted}) == 3           # told apart without tooltips
    assert boosted[0] != sync[0] and asynchronous[1] != sync[1]
    for name, kind in (("P1[1]", "source"), ("P1[2]", "sync"), ("P1[3]", "async"), ("P1[4]", "boosted"),
                       ("P1[5]", "const"), ("P1[6]", "rx"), ("P1[7]", "filter"), ("P1[8].split", "split"),
                       ("P1[8].join", "join")):
        shape_and_fill = (KINDS[kind][0].get("shape"), KINDS[kind][0].get("fillcolor"))
        assert look[name] == shape_and_fill, name
        # the legend shows the same sample with its meaning
        assert look[f"legend.{kind}"] == shape_and_fill
        assert g.nodes[f"legend.{kind}"] == KINDS[kind][1]
    assert g.parent["legend.sync"] == "cluster_legend" and g.clusters["cluster_legend"] == "legend"
    # only kinds drawn are explained
    assert "legend.zip" not in g.nodes and "legend.boosted node" not in g.nodes


def test_metrics_on_counts_every_inline_step():
    from rxbot import config

    config.metrics = True
    p = Pipe(Loop(range(6)), Filter(route_func=is_even), double, lambda x: None if x == 4 else x,
             Branch(double), print)
    line = p.steps[3].fn.__code__.co_firstlineno
    BotFrame.run()
    assert counts_of(graph_of(p, report=p.report), p.report) == {
        "P1[1]": "Loop(range(0, 6))\nin=1 out=6",
        "P1[2]": "Filter(is_even)\nin=6 out=3 filtered=3",
        "P1[3]": "double\nin=3 out=3",
        "P1[4]": f"<lambda> line {line}\nin=3 out=2 filtered=1",
        "P1[5].split": "Branch\nin=2 out=2 matched=2",
        "P1[5]/1[1]": "double\nin=2 out=2",
        "P1[6]": "print\nin=2 out=0 consumed=2",  # a sink: its Nones are consumed
    }


def test_counts_follow_a_pipe_drawn_apart_from_its_run():
    first = Pipe(Loop(range(3)), atriple, print)
    second = Pipe(Loop(range(7)), atriple, repr)
    report = BotFrame.run()
    assert second.report is report
    # 'second' was P2 in the run but is the only pipe drawn: its counts still match it
    g = graph_of(second, report=second.report)
    assert counts_of(g, report) == {"P1[1]": "Loop(range(0, 7))\nin=1 out=7", "P1[2]": "atriple\nin=7 out=7",
                       "P1[3]": inline_raise("repr", "in=7 out=7")}
    both = counts_of(graph_of(first, second, report=report), report)
    assert both["P1[2]"] == "atriple\nin=3 out=3"
    assert both["P2[2]"] == "atriple\nin=7 out=7"
    # a pipe the report never saw is drawn without counts
    other = Pipe(Loop(range(2)), double)
    assert graph_of(other, report=report).nodes == {"P1[1]": "Loop(range(0, 2))", "P1[2]": "double"}


def test_example_script_draws_the_documented_picture(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    proc = subprocess.run([sys.executable, os.path.join(repo, "examples", "render_example.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / f"route_example.{x}") for x in ("dot", "svg", "png")]
    # the committed picture is what the example draws today
    committed = os.path.join(repo, "docs", "images", "route_example.dot")
    assert (tmp_path / "route_example.dot").read_text() == open(committed, encoding="utf-8").read()
    assert (tmp_path / "route_example.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def asink(x):
    """A sink that keeps nothing: returns None for every item."""
    return None


def test_a_sink_shows_consumed_like_the_report_not_filtered():
    p = Pipe(Loop(range(4)), atriple, Fork(asink), asink)
    BotFrame.run()
    entries = {row["step"]: row for row in p.report.to_dict()["steps"]}
    assert entries["P1[4] asink"]["sink"] and entries["P1[4] asink"]["consumed"] == 4
    g = graph_of(p, report=p.report)
    # the end of the pipe and the end of a discarding branch: both sinks in the report
    assert counts_of(g, p.report)["P1[4]"] == "asink\nin=4 out=0 consumed=4"
    assert counts_of(g, p.report)["P1[3]/1[1]"] == "asink\nin=4 out=0 consumed=4"
    assert "filtered=" not in build_graph([p], p.report).source
    # a step whose Nones stop items before a later step still says filtered
    from rxbot import config

    config.metrics = True  # count the inline step
    q = Pipe(Loop(range(4)), Step(lambda x: None if x % 2 else x, name="evens"), atriple)
    BotFrame.run()
    assert counts_of(graph_of(q, report=q.report), q.report)["P1[2]"] == "evens\nin=4 out=2 filtered=2"


def test_counts_of_same_labelled_steps_in_nested_routes_land_on_their_own_nodes():
    first = Pipe(Loop(range(2)), atriple, print)
    # 'atriple' four times: top level, a Fork's branch 1, and twice in a Branch that is its branch 2
    second = Pipe(Loop(range(6)), atriple,
                  Fork(atriple, Branch(atriple, atriple, route_func=is_even), join=True), repr)
    report = BotFrame.run()
    want = {"P1[2]": "atriple\nin=6 out=6", "P1[3]/1[1]": "atriple\nin=6 out=6",
            # the nested Branch sees only the even items (3 of 6), its second step the same
            "P1[3]/2[1]/1[1]": "atriple\nin=3 out=3", "P1[3]/2[1]/1[2]": "atriple\nin=3 out=3"}
    # drawn alone, 'second' (P2 of the run) takes the report's P2 entries
    got = counts_of(graph_of(second, report=report), report)
    assert {k: got[k] for k in want} == want
    # drawn with 'first', each pipe keeps its own numbers
    both = counts_of(graph_of(first, second, report=report), report)
    assert both["P1[2]"] == "atriple\nin=2 out=2"
    assert {k: both["P2" + k[2:]] for k in want} == want


def test_drawn_nodes_name_their_steps_by_step_id():
    from rxbot.draw.render import node_paths
    from rxbot.tree.walk import StepId

    p = Pipe(Loop([1]), Fork(double, Branch(double)), triple)
    nodes, counted = node_paths([p])
    inner = nodes["P1[2]/2[1]/1[1]"]
    assert isinstance(inner, StepId)
    assert (inner.pipe, inner.positions, inner.labels) == ("P1", (2, 2, 1, 1, 1), ("Fork", "Branch", "double"))
    assert set(counted) == set(nodes.values())


# ------------------------------------------------------------------- several runs, legend
SEVERAL_RUNS = """
from rxbot import BotFrame, Fork, Pipe

Pipe(range(3), print, name="create a")
Pipe(range(3), print, name="create b")
BotFrame.run()
Pipe(range(3), Fork(print, str), print, name="copy")
BotFrame.run()
Pipe(range(3), print, name="forgotten")
"""


def test_a_script_with_several_runs_is_drawn_run_below_run_in_run_order(tmp_path):
    """examples/mysql2.py (7 pipes over 5 runs) was one 4,568-px-wide strip with its run
    order lost: now each BotFrame.run() is a labelled box, stacked in run order, and the
    pipes never run come last."""
    script = tmp_path / "job.py"
    script.write_text(SEVERAL_RUNS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                          os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "rxbot", "render", str(script), "-o", "runs.dot"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    graph = pygraphviz.AGraph(string=(tmp_path / "runs.dot").read_text())
    boxes = {sub.name: sub.graph_attr["label"] for sub in graph.subgraphs() if sub.name.startswith("cluster_run")}
    assert boxes == {"cluster_run1": "run 1", "cluster_run2": "run 2", "cluster_run3": "not run"}
    members = {name: sorted(s.name for s in graph.get_subgraph(name).subgraphs()) for name in boxes}
    assert members == {"cluster_run1": ["cluster_P1", "cluster_P2"], "cluster_run2": ["cluster_P3"],
                       "cluster_run3": ["cluster_P4"]}
    graph.layout(prog="dot")

    def y_range(pipe: str) -> Tuple[float, float]:
        box = next(sub.get_subgraph(f"cluster_{pipe}") for sub in graph.subgraphs()
                   if sub.get_subgraph(f"cluster_{pipe}") is not None)
        ys = [float(graph.get_node(n).attr["pos"].split(",")[1]) for n in box.nodes()]
        return min(ys), max(ys)

    # Graphviz's y grows upwards: every node of a run lies above every node of the next
    assert min(y_range("P1")[0], y_range("P2")[0]) > y_range("P3")[1]
    assert y_range("P3")[0] > y_range("P4")[1]


def test_one_run_is_drawn_as_before_without_run_boxes():
    p = Pipe(range(3), print)
    source = build_graph([p]).source
    assert "cluster_run" not in source and "P1.top" not in source
    BotFrame.clear()


def test_the_legend_explains_the_dashed_edge_past_a_route():
    p = Pipe(range(3), Fork(print, print), Return(str, route_func=lambda x: x > 1), print)
    g = read_json(build_graph([p]).source)
    legend_edges = {label for tail, _, label in g.edges if tail.startswith("legend.") and label}
    assert legend_edges == {"all: every item goes on\npast the route (share)",
                            "unmatched: the items it did not\nmatch go on past it"}
    plain = read_json(build_graph([Pipe(range(3), print)]).source)
    assert not any(tail.startswith("legend.all") for tail, _, _ in plain.edges)
    BotFrame.clear()


def test_drawing_prints_no_fontconfig_warning(tmp_path):
    """The bundled (older) fontconfig warned about the system's newer configuration
    ('unknown element "reset-dirs"') on every first picture of a process."""
    script = tmp_path / "draw.py"
    script.write_text("import sys\nfrom rxbot import BotFrame, Pipe\nPipe(range(3), print)\n"
                      "print(BotFrame.render('x.png'))\nprint('after', file=sys.stderr)\nBotFrame.clear()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                          os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "x.png", proc.stderr
    assert proc.stderr == "after\n"
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")
