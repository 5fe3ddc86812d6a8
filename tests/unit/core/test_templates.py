"""Templates are compiled once and kept: jinja2's bytecode cache under the local state's cache/jinja, so a
later process loads the compiled template instead of compiling it again, and a changed text is compiled anew.
Each case runs in fresh processes, as the CLI does."""

import subprocess
import sys
import textwrap

from tests.support.sandbox_hosts import REPO

# Renders its argument; with "--no-compiling", jinja2 may not compile anything (only load what is cached).
RENDER = textwrap.dedent("""
    import sys
    import jinja2
    if "--no-compiling" in sys.argv:
        def refuse(self, *args, **kwargs):
            raise SystemExit("compiled a template")
        jinja2.Environment.compile = refuse
    from vigil.core.operations import render_template
    print(render_template(sys.argv[1], {"name": "vps1"}), end="")
""")


def render(tmp_path, text: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RENDER, text, *flags], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={"VIGIL_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})


def test_a_template_compiled_once_is_loaded_compiled_by_the_next_process(tmp_path):
    first = render(tmp_path, "host {{ name }}\n")
    assert (first.returncode, first.stdout) == (0, "host vps1\n"), first.stderr
    assert len(list((tmp_path / "cache" / "jinja").iterdir())) == 1
    again = render(tmp_path, "host {{ name }}\n", "--no-compiling")
    assert (again.returncode, again.stdout) == (0, "host vps1\n"), again.stderr
    # Another text is another template: compiled, never the cached one.
    changed = render(tmp_path, "name {{ name }}\n", "--no-compiling")
    assert changed.returncode != 0 and "compiled a template" in changed.stderr


def test_a_cache_file_cut_short_is_compiled_again(tmp_path):
    assert render(tmp_path, "host {{ name }}\n").returncode == 0
    [cached] = (tmp_path / "cache" / "jinja").iterdir()
    cached.write_bytes(cached.read_bytes()[:-40])  # damaged: its compiled code cut short
    again = render(tmp_path, "host {{ name }}\n")
    assert (again.returncode, again.stdout) == (0, "host vps1\n"), again.stderr
    assert render(tmp_path, "host {{ name }}\n", "--no-compiling").returncode == 0  # and kept whole again
