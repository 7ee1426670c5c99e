"""docs/api.md's curl examples, run as written against a server with the tiny model."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers.keys import PLAIN_KEY

DOC = Path(__file__).parents[2] / "docs" / "api.md"


def test_api_doc_examples_run(plain_server, tmp_path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    script = "set -euo pipefail\n" + "\n".join(blocks)
    run = subprocess.run(
        ["timeout", "300", "bash", "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "BASE": plain_server.base_url, "API_KEY": PLAIN_KEY},
        capture_output=True,
        text=True,
    )
    out = run.stdout
    assert run.returncode == 0, run.stderr + out
    assert '"status":"ok"' in out  # health
    assert '"seed": 42' in out and (tmp_path / "sign.jpg").stat().st_size > 0
    assert '{"chained":"http' in out  # a result's URL as the next reference, loopback URLs refused
    assert '"data:image/jpeg;base64,' in out  # sync_mode
    assert '"COMPLETED"' in out and "data: {" in out  # status and stream
    assert re.search(r'"status":"(OK|CANCELLATION_REQUESTED)"', out)
    assert '"request_id"' in out  # webhook submit
    assert re.search(r'\{"file_url":"http://[^"]+/files/upload-[0-9a-f-]+\.png"\}', out)  # upload PUT
    assert re.search(r'\{"edited":"http://[^"]+/files/[^"]+\.jpg"\}', out)  # and its edit
    assert "multiples of 32" in out  # the 422
    # Text check with the real OCR, best of 3, in each dialect.
    assert re.search(r'"text_checks":\[\{"seed":[345],"found":\[(true|false)\]\}\]', out)
    assert re.search(r'\{"seed":[345],"spans":\[\{"text":"OPEN LATE","found":(true|false),"similarity"', out)
    assert re.search(r'\{"seed":[345],"score":[0-9.]+\}', out)
    # Runware: two results with cost; an upload used as a reference; a Runware error.
    assert '"cost": 0.0032768' in out and '"status":"success"' in out
    assert '"code":"invalidWidth"' in out
    # OpenAI: a PNG written from b64_json; an edit of two images by URL; an OpenAI error.
    assert (tmp_path / "openai.png").read_bytes().startswith(b"\x89PNG")
    assert '{"size":"256x256","url":"http' in out and '"param":"size"' in out
