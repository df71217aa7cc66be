#!/usr/bin/env python3
"""Import cycles between the files of src/: prints each cycle and exits 1 if any.

Every path a file names (`use` lines with their brace groups, and `crate::…`/`super::…`/
`self::…` paths written inline) is resolved to the file that defines its longest module
prefix. A `mod x;` declaration is not an import; a re-export (`pub use x::Y`) is. An edge
A → B means A names something that lives in B. Strongly connected components of more than
one file, and files that import themselves through a parent, are reported.

    python3 scripts/import_cycles.py          # from the repository root
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_files():
    """Module path (tuple) -> file, for every .rs under src/."""
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if rel == "main.rs":
                continue  # the binary crate: it imports the library as `morphogen::`
            mods[tuple(parts)] = rel
    return mods


def strip_comments(src):
    """The code of `src` with comments removed and string and char literals emptied."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', src[i:]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + len(hashes) + 2)
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", src[i:]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", src[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, flags=re.S)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it.strip():
            out.extend(prefix + e for e in expand(it.strip()))
    return out


def inline_mods(code):
    """(start, end, name) of every inline `mod name { … }` block in stripped code."""
    spans = []
    for m in re.finditer(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{", code):
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += code[i] == "{"
            depth -= code[i] == "}"
            i += 1
        spans.append((m.end(), i, m.group(1)))
    return spans


def paths_in(src):
    """(path, inline module names around it) for every path the file names."""
    code = strip_comments(src)
    spans = inline_mods(code)

    def inside(pos):
        return tuple(name for (a, b, name) in spans if a <= pos < b)

    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend((p, inside(m.start())) for p in expand(m.group(1)))
    for m in re.finditer(r"\b(?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+", code):
        before = code[max(0, m.start() - 200) : m.start()]
        if re.search(r"\buse\s+[^;]*$", before):
            continue  # part of a `use` line, already counted
        paths.append((m.group(0), inside(m.start())))
    return [(re.sub(r"\s+", "", p).split(" as ")[0], ctx) for p, ctx in paths]


def resolve(path, here, mods):
    """Module file that `path` (as written in module `here`) points into, or None."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    elif parts[0] in ("super", "self"):
        base = list(here)
        rest = parts
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None  # an external crate, std, or a name in scope
    best = tuple(base)
    for i in range(len(rest)):
        cand = tuple(base + rest[: i + 1])
        if cand in mods:
            best = cand
        else:
            break
    return mods.get(best)


def main():
    mods = module_files()
    here_of = {f: m for m, f in mods.items()}
    edges = {f: set() for f in mods.values()}
    for f in mods.values():
        here = here_of[f]
        for p, inline in paths_in(open(os.path.join(ROOT, f), encoding="utf-8").read()):
            target = resolve(p, here + inline, mods)
            if target and target != f:
                edges[f].add(target)
    # Tarjan's strongly connected components
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    n_edges = sum(len(e) for e in edges.values())
    for c in cycles:
        inner = [f"  {a} -> {b}" for a in c for b in sorted(edges[a]) if b in c]
        print("cycle among " + ", ".join(c) + ":\n" + "\n".join(inner))
    print(f"{len(edges)} files, {n_edges} import edges, {len(cycles)} cycles")
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
