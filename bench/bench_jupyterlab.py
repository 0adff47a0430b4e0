""""Run All" of every solution notebook in a JupyterLab server's kernel, against the headless run CI does.

A JupyterLab server is started as `make lab` starts it (without the MICOURSE_THREADS variable that the Makefile
exports for tests: a learner's kernel gets only what `import micourse` sets). For each notebook, back to back
(the machine may be shared, so the two runs see about the same load):
- headless: `tools.execute` (nbclient, a fresh kernel, the environment CI uses);
- JupyterLab: a session opened through the server's REST API (as a notebook tab does), its kernel driven over
  the connection file the server wrote, every code cell in order, waiting for each to finish (Run All).
Both run offline (MICOURSE_OFFLINE=1). Prints the two wall times and their ratio; the target is <= 1.3.

    python -m bench.bench_jupyterlab                          # every solution notebook
    python -m bench.bench_jupyterlab solutions/05_superposition/05_superposition.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tools.notebooks import ROOT, chapter_names, read_notebook, solution_sources

TARGET = 1.3
THREAD_VARS = ("MICOURSE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on loopback, started like `make lab`."""

    def __init__(self):
        self.port, self.token = _free_port(), "micourse-bench"
        self.runtime = Path(tempfile.mkdtemp(prefix="lab-runtime-"))
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
        env.update({"MICOURSE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "JUPYTER_RUNTIME_DIR": str(self.runtime)})
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
               f"--ServerApp.root_dir={ROOT}", f"--IdentityProvider.token={self.token}"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(240):
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("JupyterLab did not answer within 120 s")

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
        return json.loads(text) if text else None

    def run_all(self, path: Path, timeout: float = 1200) -> tuple[bool, float, str]:
        """Open a session on `path` and run every code cell in its kernel; (ok, seconds, message)."""
        from jupyter_client import BlockingKernelClient

        start = time.perf_counter()
        session = self.api("POST", "/api/sessions", {"path": str(path.relative_to(ROOT)), "type": "notebook",
                                                     "name": path.name, "kernel": {"name": "python3"}})
        kernel_id = session["kernel"]["id"]
        try:
            conn = self.runtime / f"kernel-{kernel_id}.json"
            for _ in range(120):
                if conn.exists():
                    break
                time.sleep(0.25)
            kc = BlockingKernelClient(connection_file=str(conn))
            kc.load_connection_file()
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            try:
                for cell in read_notebook(path).cells:
                    if cell.cell_type != "code" or not cell.source.strip():
                        continue
                    reply = kc.execute_interactive(cell.source, timeout=timeout, output_hook=lambda msg: None)
                    if reply["content"]["status"] != "ok":
                        content = reply["content"]
                        return False, time.perf_counter() - start, f"{content.get('ename')}: {content.get('evalue')}"
            finally:
                kc.stop_channels()
            return True, time.perf_counter() - start, "ran to the end"
        finally:
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def close(self):
        self.server.terminate()
        self.server.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.paths] or [p for c in chapter_names() for p in solution_sources(c)]
    from tools.execute import ENV, execute

    lab = Lab()  # started before ENV below changes this process's environment: the server never sees ENV
    os.environ.update(ENV)
    failed, rows = 0, []
    try:
        for path in paths:
            ok_h, headless, msg_h = execute(path)
            ok_l, in_lab, msg_l = lab.run_all(path)
            failed += (not ok_h) + (not ok_l)
            ratio = in_lab / headless
            rows.append(ratio)
            note = "" if ok_h and ok_l else f"  FAILED: headless {msg_h[:200]} | lab {msg_l[:200]}"
            print(f"{path.relative_to(ROOT)}: headless {headless:6.1f} s, JupyterLab {in_lab:6.1f} s, "
                  f"ratio {ratio:4.2f} ({'ok' if ratio <= TARGET else 'over'} the {TARGET} target){note}", flush=True)
    finally:
        lab.close()
    print(f"worst ratio {max(rows):.2f} (target <= {TARGET}); {failed} failed runs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
