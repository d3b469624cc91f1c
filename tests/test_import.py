"""``import estimator`` must stay stdlib-only: no torch, no fastapi."""

import subprocess
import sys


def test_import_estimator_loads_neither_torch_nor_fastapi():
    code = (
        "import sys\nfrom tunefit import estimator\n"
        "estimator.estimate(estimator.EstimateRequest('llama-2-7b', method='qlora'))\n"
        "heavy = [m for m in ('torch', 'fastapi', 'transformers', 'pydantic') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
