"""Run upstream GPT-SoVITS's own v3/v4 code on cases that tools/make_gsv_golden.py
prepared, in a process of its own (upstream's top-level modules `module`, `text`,
`tools` must not meet ours):

    python tools/gsv_v3_oracle.py SNAPSHOT DEPS CASES.json

SNAPSHOT is a checkout of RVC-Boss/GPT-SoVITS (the folder holding GPT_SoVITS/); DEPS a
folder with its extra dependencies (x-transformers, peft, librosa) installed with
`pip install --target`. Each case names a SoVITS file, its version, whether it is a
LoRA file, the pretrained folder and the inputs; the oracle follows upstream's
TTS_infer_pack/TTS.py (init_vits_weights, init_vocoder, using_vocoder_synthesis) with
the inputs given directly instead of read from audio files, and writes the mel and
audio to the case's output .npz. The tiny test models differ from the released ones
only in sizes, so the SoVITS model's CFM, bridge and WaveNet and the v4 vocoder are
built from upstream's classes with the sizes read from the weights.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(snapshot: str, deps: str, cases_path: str) -> int:
    sys.path[:] = [snapshot, str(Path(snapshot) / "GPT_SoVITS"), deps] + [p for p in sys.path[1:]]
    import torch

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    for case in json.loads(Path(cases_path).read_text(encoding="utf-8")):
        run_case(case)
    return 0


def _check(result, what: str, allowed_missing: tuple[str, ...] = ()) -> None:
    missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    if missing or result.unexpected_keys:
        raise SystemExit(f"{what}: missing {missing[:6]}, unexpected {result.unexpected_keys[:6]}")


def build_model(case: dict):
    import torch
    from torch import nn

    from GPT_SoVITS.f5_tts.model.backbones.dit import DiT
    from module.models import CFM, Encoder, SynthesizerTrnV3
    from process_ckpt import load_sovits_new

    version = case["version"]
    base_path = case["base"] if case["lora"] else case["sovits"]
    base = load_sovits_new(base_path)
    hps = base["config"]
    hps["model"]["semantic_frame_rate"] = "25hz"
    kwargs = dict(hps["model"])
    kwargs["version"] = version
    model = SynthesizerTrnV3(hps["data"]["filter_length"] // 2 + 1,
                             hps["train"]["segment_size"] // hps["data"]["hop_length"],
                             n_speakers=hps["data"]["n_speakers"], **kwargs)
    w = base["weight"]
    d = case["dit"]
    bridge = int(w["bridge.0.weight"].shape[0])
    model.bridge = nn.Sequential(nn.Conv1d(kwargs["inter_channels"], bridge, 1, stride=1), nn.LeakyReLU())
    model.wns1 = Encoder(bridge, bridge, bridge, 5, 1, d["wn_layers"], gin_channels=kwargs["gin_channels"])
    model.linear_mel = nn.Conv1d(bridge, 100, 1, stride=1)
    model.cfm = CFM(100, DiT(dim=d["dim"], depth=d["depth"], heads=d["heads"], ff_mult=d["ff_mult"],
                             text_dim=bridge, conv_layers=d["conv_layers"]))
    if hasattr(model, "enc_q"):
        del model.enc_q
    _check(model.load_state_dict(w, strict=False), "base weights")
    if case["lora"]:
        from peft import LoraConfig, get_peft_model

        lora = load_sovits_new(case["sovits"])
        rank = lora["lora_rank"]
        config = LoraConfig(target_modules=["to_k", "to_q", "to_v", "to_out.0"], r=rank, lora_alpha=rank,
                            init_lora_weights=True)
        model.cfm = get_peft_model(model.cfm, config)
        result = model.load_state_dict(lora["weight"], strict=False)
        if result.unexpected_keys:
            raise SystemExit(f"LoRA weights not taken: {result.unexpected_keys[:6]}")
        loaded = set(lora["weight"])
        if not any(".lora_A." in k for k in loaded):
            raise SystemExit("LoRA file without LoRA factors")
        model.cfm = model.cfm.merge_and_unload()
    return model.eval()


def build_vocoder(case: dict):
    import torch

    pretrained = Path(case["pretrained"])
    if case["version"] == "v3":
        from BigVGAN.bigvgan import BigVGAN

        # from_pretrained's own loader, called directly: newer huggingface_hub releases no
        # longer pass it the `proxies` / `resume_download` arguments it requires.
        vocoder = BigVGAN._from_pretrained(model_id=str(pretrained / "models--nvidia--bigvgan_v2_24khz_100band_256x"),
                                           revision=None, cache_dir=None, force_download=False, proxies=None,
                                           resume_download=False, local_files_only=True, token=None)
        vocoder.remove_weight_norm()
        return vocoder.eval()
    from module.models import Generator

    state = torch.load(str(pretrained / "gsv-v4-pretrained" / "vocoder.pth"), map_location="cpu", weights_only=False)
    vocoder = Generator(initial_channel=100, resblock="1", resblock_kernel_sizes=[3, 7, 11],
                        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], upsample_rates=[10, 6, 2, 2, 2],
                        upsample_initial_channel=int(state["conv_pre.weight"].shape[0]),
                        upsample_kernel_sizes=[20, 12, 4, 4, 4], gin_channels=0, is_bias=True)
    vocoder.remove_weight_norm()
    result = vocoder.load_state_dict(state)
    _check(result, "v4 vocoder")
    return vocoder.eval()


def run_case(case: dict) -> None:
    import torch

    from module.mel_processing import mel_spectrogram_torch, spectrogram_torch

    model = build_model(case)
    vocoder = build_vocoder(case)
    v3 = case["version"] == "v3"
    t_ref, t_chunk = (468, 934) if v3 else (500, 1000)
    mel_kw = ({"n_fft": 1024, "win_size": 1024, "hop_size": 256, "num_mels": 100, "sampling_rate": 24000}
              if v3 else {"n_fft": 1280, "win_size": 1280, "hop_size": 320, "num_mels": 100, "sampling_rate": 32000})
    inputs = np.load(case["inputs"])
    spec_audio = torch.from_numpy(inputs["spec_audio"]).unsqueeze(0)
    refer_spec = spectrogram_torch(spec_audio, 2048, 32000, 640, 2048, center=False)
    prompt_tokens = torch.from_numpy(inputs["prompt_tokens"]).view(1, 1, -1)
    prompt_phones = torch.from_numpy(inputs["prompt_phones"]).unsqueeze(0)
    # -- using_vocoder_synthesis ------------------------------------------------------
    fea_ref, ge = model.decode_encp(prompt_tokens, prompt_phones, refer_spec)
    mel2 = mel_spectrogram_torch(torch.from_numpy(inputs["mel_audio"]).unsqueeze(0), fmin=0, fmax=None, center=False,
                                 **mel_kw)
    mel2 = (mel2 + 12) / 14 * 2 - 1
    t_min = min(mel2.shape[2], fea_ref.shape[2])
    mel2, fea_ref = mel2[:, :, :t_min], fea_ref[:, :, :t_min]
    if t_min > t_ref:
        mel2, fea_ref, t_min = mel2[:, :, -t_ref:], fea_ref[:, :, -t_ref:], t_ref
    chunk_len = t_chunk - t_min
    tokens = torch.from_numpy(inputs["tokens"]).view(1, 1, -1)
    phones = torch.from_numpy(inputs["phones"]).unsqueeze(0)
    fea_todo, ge = model.decode_encp(tokens, phones, refer_spec, ge, float(inputs["speed"]))
    torch.manual_seed(int(inputs["seed"]))
    results, idx = [], 0
    while True:
        chunk = fea_todo[:, :, idx:idx + chunk_len]
        if chunk.shape[-1] == 0:
            break
        idx += chunk_len
        fea = torch.cat([fea_ref, chunk], 2).transpose(2, 1)
        res = model.cfm.inference(fea, torch.LongTensor([fea.size(1)]), mel2, int(inputs["steps"]),
                                  inference_cfg_rate=0)
        res = res[:, :, mel2.shape[2]:]
        mel2 = res[:, :, -t_min:]
        fea_ref = chunk[:, :, -t_min:]
        results.append(res)
    mel = torch.cat(results, 2)
    mel = (mel + 1) / 2 * 14 - 12
    audio = vocoder(mel)[0][0]
    np.savez(case["output"], mel=mel[0].numpy(), audio=audio.numpy(), ge=ge[0, :, 0].numpy(),
             chunks=np.array(len(results)))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
