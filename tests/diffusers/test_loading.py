"""Loading diffusers pipelines: registration, what is detected, kind mismatches, --pipeline-class, options."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynamo_mono.config import ConfigError
from tests.diffusers.conftest import ROOT, engine_args

pytestmark = pytest.mark.timeout(120)


def test_registered_for_every_media_kind_without_importing_torch() -> None:
    code = ("import sys\n"
            "from dynamo_mono.plugins import Plugins\n"
            "import dynamo_mono_diffusers.plugin as plugin\n"
            "p = Plugins()\n"
            "p.register_module(plugin, 'diffusers')\n"
            "for kind in ('image', 'video', 'audio'):\n"
            "    reg = p.modality(kind, 'diffusers')\n"
            "    assert reg.factory is plugin.create_generator and reg.missing() == [], reg\n"
            "    assert {'device', 'dtype', 'pipeline_class', 'max_image_size'} <= {o.name for o in reg.options}\n"
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules\n")
    env_path = str(ROOT / "plugins" / "diffusers")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={"PYTHONPATH": f"{ROOT}:{env_path}", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


def test_entry_point_is_declared() -> None:
    text = (ROOT / "plugins" / "diffusers" / "pyproject.toml").read_text()
    assert '[project.entry-points.dynamo_mono]\ndiffusers = "dynamo_mono_diffusers.plugin"' in text


@pytest.mark.parametrize("name, kind, task", [
    ("stable-diffusion", "image", "text-to-image"),
    ("flux", "image", "text-to-image"),
    ("text-to-video-sd", "video", "text-to-video"),
    ("wan", "video", "text-to-video"),
    ("wan-i2v", "video", "image-to-video"),
    ("audioldm", "audio", "text-to-audio"),
])
def test_what_each_pipeline_makes(tiny, name: str, kind: str, task: str) -> None:
    from diffusers import DiffusionPipeline

    from dynamo_mono_diffusers.traits import inspect_pipeline

    traits = inspect_pipeline(DiffusionPipeline.from_pretrained(tiny[name], local_files_only=True))
    assert (traits.makes, traits.task) == (kind, task)
    assert traits.steps and traits.guidance and traits.step_callback is not None


def test_traits_details(tiny) -> None:
    from diffusers import DiffusionPipeline

    from dynamo_mono_diffusers.traits import inspect_pipeline

    def traits(name: str):
        return inspect_pipeline(DiffusionPipeline.from_pretrained(tiny[name], local_files_only=True))

    sd, t2v, wan, i2v, audio = (traits(n) for n in ("stable-diffusion", "text-to-video-sd", "wan", "wan-i2v",
                                                    "audioldm"))
    assert sd.batch_param == "num_images_per_prompt" and sd.step_callback == "callback_on_step_end"
    assert t2v.batch_param is None and t2v.step_callback == "callback" and t2v.frames_multiple == 1
    assert wan.batch_param == "num_videos_per_prompt" and wan.frames_multiple == 4 and wan.image_param is None
    assert i2v.image_param == "image" and i2v.image_required
    assert audio.seconds_param == "audio_length_in_s" and audio.sample_rate == 16000
    assert audio.batch_param == "num_waveforms_per_prompt"


@pytest.mark.parametrize("name, kind, message", [
    ("wan", "image", "is WanPipeline, a text-to-video pipeline: serve it with --model-kind video"),
    ("stable-diffusion", "video", "is StableDiffusionPipeline, a text-to-image pipeline: serve it with "
                                  "--model-kind image"),
    ("audioldm", "video", "is AudioLDMPipeline, a text-to-audio pipeline: serve it with --model-kind audio"),
    ("wan-i2v", "audio", "is WanImageToVideoPipeline, an image-to-video pipeline: serve it with --model-kind video"),
])
async def test_kind_mismatch_is_refused_at_start(started, tiny, name: str, kind: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", "\\+")) as err:
        await started(tiny[name], kind)
    assert str(tiny[name]) in str(err.value)


def _retagged(src: Path, dst: Path, class_name: str) -> Path:
    shutil.copytree(src, dst)
    index = json.loads((dst / "model_index.json").read_text())
    index["_class_name"] = class_name
    (dst / "model_index.json").write_text(json.dumps(index))
    return dst


async def test_pipeline_class_override(started, tiny, tmp_path) -> None:
    img2img = _retagged(tiny["stable-diffusion"], tmp_path / "img2img", "StableDiffusionImg2ImgPipeline")
    with pytest.raises(ConfigError, match="is StableDiffusionImg2ImgPipeline, an image-to-image pipeline"):
        await started(img2img, "image")
    gen = await started(img2img, "image", pipeline_class="StableDiffusionPipeline")
    assert type(gen.pipeline).__name__ == "StableDiffusionPipeline"
    from tests.diffusers.test_generate import image_req, output

    assert len((await output(gen, image_req(n=2))).files) == 2
    with pytest.raises(ConfigError, match="is StableDiffusionImg2ImgPipeline"):  # and the other way round
        await started(tiny["stable-diffusion"], "image", pipeline_class="StableDiffusionImg2ImgPipeline")


@pytest.mark.parametrize("name, message", [
    ("NoSuchPipeline", "invalid --pipeline-class='NoSuchPipeline': is not a class of diffusers"),
    ("AutoencoderKL", "invalid --pipeline-class='AutoencoderKL': is not a pipeline class"),
])
async def test_unknown_pipeline_class(started, tiny, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await started(tiny["stable-diffusion"], "image", pipeline_class=name)


async def test_not_a_pipeline_directory(started, tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs --model DIR"):
        await started("", "image")
    with pytest.raises(ConfigError, match="is not a diffusers pipeline directory"):
        await started(tmp_path, "image")
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": '
                                               '["diffusers", "UNet2DConditionModel"]}')
    with pytest.raises(ConfigError, match="cannot load the diffusers pipeline in"):
        await started(tmp_path, "image")


async def test_a_missing_variant_is_a_config_error(started, tiny) -> None:
    with pytest.raises(ConfigError, match="cannot load the diffusers pipeline"):
        await started(tiny["stable-diffusion"], "image", variant="fp16")


async def test_options_shape_the_card(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image", max_image_size=500, default_image_size="48x32",
                        default_num_inference_steps=3, max_num_inference_steps=7, default_guidance_scale=4.0,
                        max_num_outputs=2, dtype="float32", device="cpu")
    m = gen.model_card().media
    assert (m.max_width, m.max_height, m.size_multiple) == (496, 496, 8)
    assert (m.default_width, m.default_height, m.default_steps, m.max_steps) == (48, 32, 3, 7)
    assert (m.default_guidance_scale, m.max_n) == (4.0, 2)
    assert str(gen.pipeline.device) == "cpu"
    card = gen.model_card()
    assert (card.name, card.kind, card.max_model_len, card.block_size) == ("tiny", "image", 0, 1)


async def test_pipeline_defaults_scale_into_the_size_limit(started, tiny) -> None:
    gen = await started(tiny["wan"], "video", max_image_size=400, default_num_frames=9, max_num_frames=33,
                        default_fps=24)
    m = gen.model_card().media
    assert (m.default_width, m.default_height) == (400, 224)  # 832x480 scaled to fit, multiples of 16
    assert (m.default_frames, m.max_frames, m.default_fps, m.max_fps) == (9, 33, 24, 60)


async def test_video_option_values_checked_against_the_pipeline(started, tiny) -> None:
    with pytest.raises(ConfigError, match="--default-num-frames=8: WanPipeline makes 4k\\+1 frames"):
        await started(tiny["wan"], "video", default_num_frames=8, max_num_frames=9)
    with pytest.raises(ConfigError, match="makes 16 frames by default, above --max-num-frames=8"):
        await started(tiny["text-to-video-sd"], "video", max_num_frames=8)
    with pytest.raises(ConfigError, match="--default-image-size=40x40: FluxPipeline makes sizes that are "
                                          "multiples of 16"):
        await started(tiny["flux"], "image", default_image_size="40x40")


async def test_audio_options(started, tiny) -> None:
    gen = await started(tiny["audioldm"], "audio", default_audio_seconds=1.5, max_audio_seconds=4.0)
    m = gen.model_card().media
    assert (m.default_seconds, m.max_seconds, m.sample_rate) == (1.5, 4.0, 16000)


@pytest.mark.parametrize("kind, options, message", [
    ("image", {"device": "tpu"}, "invalid --device='tpu'"),
    ("image", {"device": "cuda:x"}, "invalid --device='cuda:x'"),
    ("image", {"max_num_frames": 8}, "--max-num-frames applies to video models only, not to image models"),
    ("video", {"max_audio_seconds": 3.0}, "--max-audio-seconds applies to audio models only"),
    ("audio", {"default_image_size": "64x64"}, "--default-image-size applies to image and video models only"),
    ("image", {"default_image_size": "64"}, "must be WIDTHxHEIGHT"),
    ("image", {"default_image_size": "2048x64"}, "--default-image-size: 2048 is above --max-image-size=1024"),
    ("image", {"default_num_inference_steps": 60}, "--default-num-inference-steps: 60 is above "
                                                   "--max-num-inference-steps=50"),
    ("video", {"default_fps": 90}, "--default-fps: 90 is above --max-fps=60"),
])
def test_bad_options_fail_in_the_factory(kind: str, options: dict, message: str) -> None:
    from dynamo_mono_diffusers.plugin import create_generator

    with pytest.raises(ConfigError, match=message):
        create_generator(engine_args("unused", kind, **options))


async def test_no_cuda_device(started, tiny) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ConfigError, match="--device=cuda: torch .* sees no CUDA device"):
        await started(tiny["stable-diffusion"], "image", device="cuda")


def test_device_and_dtype_resolution() -> None:
    import torch

    from dynamo_mono_diffusers.loader import resolve_device, resolve_dtype

    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("float16", "cpu") == "float16"
    if not torch.cuda.is_available():
        assert resolve_device("auto", 3) == "cpu"


async def test_variant_weights_load(started, tiny, tmp_path) -> None:
    from diffusers import DiffusionPipeline

    DiffusionPipeline.from_pretrained(tiny["stable-diffusion"], local_files_only=True).save_pretrained(
        tmp_path / "fp16", variant="fp16")
    assert list((tmp_path / "fp16" / "unet").glob("*.fp16.safetensors"))
    gen = await started(tmp_path / "fp16", "image", variant="fp16")
    assert gen.healthy()
