"""Tiny diffusers pipelines with random weights, built offline and reproducibly, for tests and demos.

Each `make_*` function builds one pipeline from small configs (torch.manual_seed fixes the weights; tokenizers are
made in-process from a character vocabulary, nothing is downloaded) and saves it with `save_pretrained(path)`, so
loading it exercises the real `from_pretrained(local_files_only=True)` path. Every pipeline makes noise, quickly:
a 2-step call at 64x64 (or a fraction of a second of audio) takes well under a second on a CPU.

    python -m dynamo_mono_diffusers.tiny_pipelines OUT_DIR [THREADS]   # builds them all, times one call of each
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import torch

SEED = 0
# Printable ASCII: every prompt the tests use tokenizes to known pieces.
_CHARS = [chr(c) for c in range(33, 127)]


def _clip_tokenizer(max_length: int = 77):
    """A CLIP BPE tokenizer over single characters (plus one merge, so the merge path is exercised)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in [*_CHARS, *(c + "</w>" for c in _CHARS), "th", "the</w>"]:
        vocab.setdefault(piece, len(vocab))
    # tokenizers wants the merges as pairs.
    return CLIPTokenizer(vocab=vocab, merges=[("t", "h"), ("th", "e</w>")], model_max_length=max_length)


def _roberta_tokenizer(max_length: int = 77):
    """A byte-level BPE (RoBERTa) tokenizer: the 256 byte symbols and no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _t5_tokenizer(max_length: int = 64):
    """A unigram (T5 / UMT5) tokenizer over single characters, with and without the word-start marker."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in _CHARS] + [("\u2581" + c, -2.5) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def _t5_encoder(vocab_size: int, d_model: int = 32, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config, model = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    return model(config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0, is_encoder_decoder=False))


def _clip_text_encoder(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                                       intermediate_size=2 * hidden, num_attention_heads=heads,
                                       num_hidden_layers=layers, vocab_size=vocab_size, projection_dim=hidden))


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def make_stable_diffusion(path: str | Path) -> Path:
    """StableDiffusionPipeline (text-to-image): UNet 4/8 channels, VAE x2, CLIP text encoder; default 64x64."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(SEED)
    tokenizer = _clip_tokenizer()
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=2)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=2)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=_clip_text_encoder(len(tokenizer)), tokenizer=tokenizer,
                                   unet=unet, scheduler=_ddim(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return _save(pipe, path)


def make_flux(path: str | Path) -> Path:
    """FluxPipeline (text-to-image, a guidance-distilled transformer): CLIP + T5 text encoders; sizes multiple of 16."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(SEED)
    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8, 8, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                        text_encoder=_clip_text_encoder(len(tokenizer)), tokenizer=tokenizer,
                        text_encoder_2=_t5_encoder(len(tokenizer_2)), tokenizer_2=tokenizer_2,
                        transformer=transformer)
    pipe.register_to_config()
    return _save(pipe, path)


def make_text_to_video_sd(path: str | Path) -> Path:
    """TextToVideoSDPipeline (text-to-video, a 3D UNet): 16 frames by default at 32x32 (VAE x2)."""
    from diffusers import AutoencoderKL, TextToVideoSDPipeline, UNet3DConditionModel

    torch.manual_seed(SEED)
    tokenizer = _clip_tokenizer()
    unet = UNet3DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=8,
                                attention_head_dim=4, norm_num_groups=2)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=2)
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=_clip_text_encoder(len(tokenizer), hidden=8, heads=2),
                                 tokenizer=tokenizer, unet=unet, scheduler=_ddim())
    return _save(pipe, path)


def _wan_parts(in_channels: int, image_dim: int | None = None):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    tokenizer = _t5_tokenizer()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256,
                                        ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32, image_dim=image_dim)
    return dict(tokenizer=tokenizer, text_encoder=_t5_encoder(len(tokenizer), umt5=True), vae=vae,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)


def make_wan(path: str | Path) -> Path:
    """WanPipeline (text-to-video, a 3D transformer): frames 4k+1, sizes multiple of 16."""
    from diffusers import WanPipeline

    torch.manual_seed(SEED)
    return _save(WanPipeline(**_wan_parts(16)), path)


def make_wan_image_to_video(path: str | Path) -> Path:
    """WanImageToVideoPipeline (image-to-video): Wan with a CLIP vision encoder for the starting image."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(SEED)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        intermediate_size=16, patch_size=1))
    pipe = WanImageToVideoPipeline(**_wan_parts(36, image_dim=4), image_encoder=image_encoder,
                                   image_processor=CLIPImageProcessor(crop_size=32, size=32))
    return _save(pipe, path)


def make_audioldm(path: str | Path) -> Path:
    """AudioLDMPipeline (text-to-audio): mel UNet + CLAP text encoder + HiFi-GAN vocoder at 16 kHz."""
    from diffusers import AudioLDMPipeline, AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(SEED)
    tokenizer = _roberta_tokenizer()
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=32,
                                in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=(8, 16),
                                class_embed_type="simple_projection", projection_class_embeddings_input_dim=8,
                                class_embeddings_concat=True)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, latent_channels=4,
                        norm_num_groups=8, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=8, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=1, num_hidden_layers=1, vocab_size=len(tokenizer), projection_dim=8,
        max_position_embeddings=80))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[2, 2],
        upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        normalize_before=False))
    pipe = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_ddim(),
                            vocoder=vocoder)
    return _save(pipe, path)


def _save(pipe, path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out)
    return out


# name -> (builder, kind, kwargs of one quick call)
TINY_PIPELINES: dict[str, tuple[Callable[[str | Path], Path], str, dict]] = {
    "stable-diffusion": (make_stable_diffusion, "image", dict(height=64, width=64)),
    "flux": (make_flux, "image", dict(height=64, width=64, max_sequence_length=32)),
    "text-to-video-sd": (make_text_to_video_sd, "video", dict(height=32, width=32, num_frames=4)),
    "wan": (make_wan, "video", dict(height=32, width=32, num_frames=5, max_sequence_length=32)),
    "wan-i2v": (make_wan_image_to_video, "video", dict(height=32, width=32, num_frames=5, max_sequence_length=32)),
    "audioldm": (make_audioldm, "audio", dict(audio_length_in_s=0.25)),
}


def build_tiny_pipelines(root: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build the named tiny pipelines (default all) under root/<name>; returns name -> directory."""
    _quiet()
    root = Path(root)
    return {name: TINY_PIPELINES[name][0](root / name) for name in (names or list(TINY_PIPELINES))}


def _quiet() -> None:
    import diffusers.utils.logging
    import transformers.utils.logging

    for lib in (diffusers.utils.logging, transformers.utils.logging):
        lib.disable_progress_bar()
        lib.set_verbosity_error()  # deprecation notices of the pipelines built here


def _time_calls(dirs: dict[str, Path]) -> None:
    """Load each pipeline and print the best of 3 timed 2-step calls (after a warm-up call)."""
    from diffusers import DiffusionPipeline
    from PIL import Image

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    for name, path in dirs.items():
        pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(TINY_PIPELINES[name][2], prompt="a red cat", num_inference_steps=2, output_type="np")
        if name == "wan-i2v":
            kwargs["image"] = Image.new("RGB", (32, 32), (200, 30, 30))
        pipe(**kwargs)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            pipe(**kwargs, generator=torch.Generator().manual_seed(1))
            best = min(best, time.perf_counter() - start)
        shape = ", ".join(f"{k}={v}" for k, v in TINY_PIPELINES[name][2].items())
        print(f"{name:18s} {type(pipe).__name__:26s} {best * 1000:6.0f} ms per 2-step call ({shape})")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m dynamo_mono_diffusers.tiny_pipelines OUT_DIR [TORCH_THREADS]")
    if len(sys.argv) == 3:
        torch.set_num_threads(int(sys.argv[2]))
    _time_calls(build_tiny_pipelines(sys.argv[1]))
