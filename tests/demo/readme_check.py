#!/usr/bin/env python3
"""Checks that the README's front door stays true (run by readme_test.cpp).

    python3 tests/demo/readme_check.py SOURCE_DIR BINARY_DIR

- every `bash scripts/<name>.sh ...` the README names exists and parses
  (bash -n); every benchmark named after `scripts/bench.sh` is a
  bench/<name>.cpp; every program path under build*/ names a target that
  exists in this build tree (the demo, mpx-top, the benchmarks' sources);
- every relative link and every docs/, samples/, demo/, bench/ path exists;
- every `mpx::...` name in the README's C++ blocks, and every `.with_<option>(`
  it calls, is declared in a public header (*/include/mpx/**.hpp), so that a
  renamed or removed API cannot stay in the tour;
- the quick start's commands are the first block and run the demo and the tests.
Prints one line per problem and exits 1 if there is any.
"""
import glob
import os
import re
import subprocess
import sys


def main():
    source, binary = sys.argv[1], sys.argv[2]
    readme = open(os.path.join(source, "README.md")).read()
    problems = []

    blocks = re.findall(r"```(\w*)\n(.*?)```", readme, re.S)
    shell = "\n".join(body for lang, body in blocks if lang in ("sh", "bash", "shell"))
    cpp = "\n".join(body for lang, body in blocks if lang == "cpp")
    # Commands quoted inline (`bash scripts/...`) count as much as the ones in blocks.
    inline = "\n".join(re.findall(r"`([^`\n]+)`", readme))

    # The quick start: its first shell block runs the demo and the test suite.
    first_sh = next((body for lang, body in blocks if lang in ("sh", "bash", "shell")), "")
    for needed in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        if needed not in first_sh:
            problems.append(f"quick start: the first shell block lacks '{needed}'")

    # Scripts.
    for line in (shell + "\n" + inline).splitlines():
        for m in re.finditer(r"bash (scripts/[\w.-]+\.sh)([^#|`]*)", line):
            script = os.path.join(source, m.group(1))
            if not os.path.isfile(script):
                problems.append(f"{m.group(1)}: no such script")
                continue
            if subprocess.run(["bash", "-n", script]).returncode != 0:
                problems.append(f"{m.group(1)}: does not parse (bash -n)")
            if m.group(1) == "scripts/bench.sh":
                args = m.group(2).split("--")[0].split()
                for name in args:
                    if re.fullmatch(r"\w+_bench", name) and not os.path.isfile(os.path.join(source, "bench", name + ".cpp")):
                        problems.append(f"scripts/bench.sh {name}: no bench/{name}.cpp")

    # Programs under a build tree: build-bench/bench/<x>, build/demo/<x>, build/tools/<x>.
    for m in re.finditer(r"\bbuild[\w-]*/(bench|demo|tools|samples)/([\w-]+)", readme):
        kind, name = m.group(1), m.group(2)
        if kind == "bench":
            ok = os.path.isfile(os.path.join(source, "bench", name + ".cpp"))
        else:
            ok = os.path.exists(os.path.join(binary, kind, name))
        if not ok:
            problems.append(f"{m.group(0)}: no such program")
    for tool in set(re.findall(r"\b(mpx-top)\b", readme)):
        if not os.path.exists(os.path.join(binary, "tools", tool)):
            problems.append(f"{tool}: not built in {binary}/tools")

    # Paths and links.
    paths = set(re.findall(r"\]\(([^)#\s]+)\)", readme))
    paths |= set(re.findall(r"(?<![\w/.-])((?:docs|samples|demo|bench|scripts|tools|fuzz)/[\w./-]+\.(?:md|cpp|hpp|py|sh|svg|png))",
                            readme))
    for p in sorted(paths):
        if re.match(r"^[a-z]+://", p):
            continue
        if not os.path.exists(os.path.join(source, p)):
            problems.append(f"{p}: linked or named, but missing")

    # API names in the C++ blocks.
    headers = ""
    for h in glob.glob(os.path.join(source, "*", "include", "mpx", "**", "*.hpp"), recursive=True):
        headers += open(h).read()
    declared = set(re.findall(r"\b[A-Za-z_]\w*\b", headers))
    for qualified in sorted(set(re.findall(r"\bmpx::(?:[A-Za-z_]\w*::)*[A-Za-z_]\w*", cpp))):
        for part in qualified.split("::")[1:]:
            if part not in declared:
                problems.append(f"{qualified}: '{part}' is declared in no public header")
    for option in sorted(set(re.findall(r"\.(with_\w+)\(", cpp))):
        if not re.search(r"\b" + option + r"\s*\(", headers):
            problems.append(f".{option}(): no such option in the public headers")
    for macro in sorted(set(re.findall(r"\b(MPX_[A-Z_]+)\(", cpp))):
        if "#define " + macro not in headers:
            problems.append(f"{macro}: no such macro in the public headers")

    for p in problems:
        print(p)
    print(f"readme_check: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
