"""Loading converted folders the way users do: trust_remote_code without pvt-hf installed, and Hub ids from the
Hugging Face cache offline."""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import BLOCK_PVT_HF, REFERENCE, make_hub_cache, run_python


CHECK_OUTPUTS = """
import json, torch, transformers
from safetensors.torch import load_file
spec = json.load(open({spec!r}))
tensors = load_file({io!r})
model = getattr(transformers, {auto_class!r}).from_pretrained({source!r}, **{kwargs!r}).eval()
assert type(model).__module__.startswith({module_prefix!r}), type(model).__module__
worst = 0.0
for case in spec["cases"]:
    with torch.no_grad():
        logits = model(tensors[case["pixel_values"]]).logits
    want = tensors[case["logits"]]
    worst = max(worst, ((logits - want).norm() / want.norm()).item())
print(json.dumps({{"worst": worst, "class": type(model).__name__}}))
"""


def check_script(name, source, auto_class, kwargs, module_prefix, block=False):
    code = CHECK_OUTPUTS.format(
        spec=str(REFERENCE / f"{name}.json"),
        io=str(REFERENCE / f"{name}.io.safetensors"),
        auto_class=auto_class,
        source=source,
        kwargs=kwargs,
        module_prefix=module_prefix,
    )
    return (BLOCK_PVT_HF if block else "import pvt_hf\n") + textwrap.dedent(code)


@pytest.mark.parametrize(
    "name, auto_class",
    [
        ("pvt_v1_mini_cls", "AutoModelForImageClassification"),
        ("pvt_v2_li_mini_seg", "AutoModelForSemanticSegmentation"),
    ],
)
def test_trust_remote_code_without_pvt_hf(name, auto_class, converted, tmp_path):
    folder = converted(name)
    files = sorted(os.listdir(folder))
    assert "configuration_pvt.py" in files and "modeling_pvt.py" in files
    code = check_script(name, folder, auto_class, {"trust_remote_code": True}, "transformers_modules", block=True)
    result = run_python(code, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, cwd=tmp_path)
    bound = 1e-6 if name.endswith("cls") else 1e-5
    assert result["worst"] <= bound


def test_hub_id_resolves_from_the_cache_offline(converted, tmp_path):
    cache = tmp_path / "hub"
    make_hub_cache(cache, "pvt-hf/pvt-v2-mini", converted("pvt_v2_mini_cls"))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf")}
    with_package = check_script(
        "pvt_v2_mini_cls", "pvt-hf/pvt-v2-mini", "AutoModelForImageClassification", {}, "pvt_hf"
    )
    assert run_python(with_package, env=env, cwd=tmp_path)["worst"] <= 1e-6
    remote = check_script(
        "pvt_v2_mini_cls",
        "pvt-hf/pvt-v2-mini",
        "AutoModelForImageClassification",
        {"trust_remote_code": True},
        "transformers_modules",
        block=True,
    )
    assert run_python(remote, env=env, cwd=tmp_path)["worst"] <= 1e-6
    # a Hub id that is not in the cache fails with transformers' own offline message
    missing = "import pvt_hf, transformers\ntransformers.AutoModel.from_pretrained('pvt-hf/not-there')"
    result = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True, env={**os.environ, **env})
    assert result.returncode != 0 and "offline" in result.stderr.lower()


def test_pipeline_with_trust_remote_code_without_pvt_hf(converted, tmp_path):
    """The whole pipeline (processor + model) runs from the folder's own code and gives pvt-hf's answer."""
    import skimage.data
    from PIL import Image

    Image.fromarray(skimage.data.coffee()).save(tmp_path / "coffee.png")
    answer = (
        "import json\nfrom transformers import pipeline\n"
        "pipe = pipeline('image-classification', model={folder!r}, trust_remote_code={remote})\n"
        "print(json.dumps({{'module': type(pipe.image_processor).__module__, 'top': pipe({image!r}, top_k=3)}}))"
    )
    folder, image = converted("pvt_v2_mini_cls"), str(tmp_path / "coffee.png")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    remote = run_python(BLOCK_PVT_HF + answer.format(folder=folder, image=image, remote=True), env=env, cwd=tmp_path)
    local = run_python(
        "import pvt_hf\n" + answer.format(folder=folder, image=image, remote=False), env=env, cwd=tmp_path
    )
    assert remote["module"].startswith("transformers_modules") and local["module"] == "pvt_hf.image_processing_pvt"
    assert [p["label"] for p in remote["top"]] == [p["label"] for p in local["top"]]
    assert [p["score"] for p in remote["top"]] == pytest.approx([p["score"] for p in local["top"]], rel=1e-6)
