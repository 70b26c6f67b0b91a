"""Drive the reference GPT-SoVITS implementation (the `gpt-sovits-cpufast` 0.1.0 package)
on one voice and one text, in a process of its own: the package puts top-level modules
named `AR`, `module`, `text` and `tools` on sys.path.

    python tests/gsv_reference_runner.py REFERENCE_ROOT INPUT.json

REFERENCE_ROOT is where the package was installed with `pip install --target`. INPUT.json
holds a list of cases; each names a voice's files, gives the prompt and target as phone
ids and per-language segments (norm_text, word2ph), the sampling settings, and the .npz
file that receives the reference semantic tokens and audio. The steps mirror the package's TTS pipeline
(TTS_infer_pack/TTS.py: init_t2s_weights, init_vits_weights, _set_prompt_semantic,
_get_ref_spec, run) with the package's own model classes and checkpoint readers.

One substitution: audio files are read with soundfile and resampled with soxr, as
voxpipe does (the package uses PyAV's resampler, upstream GPT-SoVITS librosa's soxr), so
that the comparison is about the models, not about resamplers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(root: str, input_path: str) -> int:
    sys.path[:0] = [root, str(Path(root) / "GPT_SoVITS")]
    import torch

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    for case in json.loads(Path(input_path).read_text(encoding="utf-8")):
        run_case(case)
    return 0


_PRETRAINED: dict[tuple[str, str], object] = {}


def _cached(kind: str, path: str, build):
    if (kind, path) not in _PRETRAINED:
        _PRETRAINED[kind, path] = build()
    return _PRETRAINED[kind, path]


def run_case(spec: dict) -> None:
    import time

    import soundfile
    import soxr
    import torch

    from AR.models.t2s_lightning_module import Text2SemanticLightningModule
    from feature_extractor.cnhubert import CNHubert
    from module.mel_processing import spectrogram_torch
    from module.models import SynthesizerTrn
    from process_ckpt import get_sovits_version_from_path_fast, load_sovits_new
    from text.chinese_bert import get_bert_feature, load_model, load_tokenizer

    pretrained = Path(spec["pretrained"])

    # -- T2S, as init_t2s_weights ------------------------------------------------------
    dict_s1 = torch.load(spec["gpt"], map_location="cpu", weights_only=False)
    config = dict_s1["config"]
    t2s = Text2SemanticLightningModule(config, "****", is_train=False, build_t2s_transformer=False,
                                       build_h_module=False)
    t2s.load_inference_only_state_dict(dict_s1["weight"])
    t2s.model.release_inference_only_unused_modules()
    t2s = t2s.eval()
    early_stop_num = 50 * config["data"]["max_sec"]

    # -- SoVITS, as init_vits_weights ----------------------------------------------------
    _, model_version, _ = get_sovits_version_from_path_fast(spec["sovits"])
    dict_s2 = load_sovits_new(spec["sovits"])
    hps = dict_s2["config"]
    hps["model"]["semantic_frame_rate"] = "25hz"
    version = "v1" if dict_s2["weight"]["enc_p.text_embedding.weight"].shape[0] == 322 else "v2"
    hps["model"]["version"] = model_version if "Pro" in model_version else version
    is_pro = "Pro" in model_version
    vits = SynthesizerTrn(hps["data"]["filter_length"] // 2 + 1,
                          hps["train"]["segment_size"] // hps["data"]["hop_length"],
                          n_speakers=hps["data"]["n_speakers"], **hps["model"])
    loaded = vits.load_state_dict(dict_s2["weight"], strict=False)
    # strict=False as the package loads; anything but the training-only posterior encoder
    # missing or left over means the checkpoint is not what GPT-SoVITS writes.
    missing = [k for k in loaded.missing_keys if not k.startswith("enc_q.")]
    if missing or loaded.unexpected_keys:
        raise SystemExit(f"SoVITS checkpoint mismatch: missing {missing[:5]}, unexpected {loaded.unexpected_keys[:5]}")
    vits.dec.remove_weight_norm()
    vits = vits.eval()
    sampling_rate = hps["data"]["sampling_rate"]

    sv_model = None
    if is_pro:
        import sv as sv_module

        sv_module.sv_path = str(pretrained / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt")
        sv_model = _cached("sv", str(pretrained), lambda: sv_module.SV("cpu", False))

    hubert = _cached("hubert", str(pretrained), lambda: CNHubert(str(pretrained / "chinese-hubert-base")).eval())
    bert_tokenizer = _cached("tok", str(pretrained), lambda: load_tokenizer(str(pretrained / "chinese-roberta-wwm-ext-large")))
    bert_model = _cached("bert", str(pretrained), lambda: load_model(str(pretrained / "chinese-roberta-wwm-ext-large")).eval())

    def load(path: str, rate: int | None) -> tuple[np.ndarray, int]:
        data, sr = soundfile.read(path, dtype="float32", always_2d=True)
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        if rate is not None and rate != sr:
            data, sr = soxr.resample(data, sr, rate, quality="HQ").astype(np.float32), rate
        return np.ascontiguousarray(data), sr

    # -- the prompt: _set_prompt_semantic and _get_ref_spec ---------------------------------
    wav16k, _ = load(spec["ref_audio"], 16000)
    zero_wav = torch.zeros(int(sampling_rate * 0.3))
    wav16k = torch.cat([torch.from_numpy(wav16k), zero_wav])
    hubert_feature = hubert.model(wav16k.unsqueeze(0))["last_hidden_state"].transpose(1, 2)
    prompt_semantic = vits.extract_latent(hubert_feature)[0, 0]

    raw, raw_sr = load(spec["ref_audio"], None)
    audio = torch.from_numpy(raw).unsqueeze(0)
    if raw_sr != sampling_rate:
        audio = torch.from_numpy(soxr.resample(raw, raw_sr, sampling_rate, quality="HQ").astype(np.float32)).unsqueeze(0)
    maxx = audio.abs().max()
    if maxx > 1:
        audio /= min(2, maxx)
    refer_spec = spectrogram_torch(audio, hps["data"]["filter_length"], sampling_rate, hps["data"]["hop_length"],
                                   hps["data"]["win_length"], center=False)
    sv_emb = None
    if is_pro:
        audio16 = torch.from_numpy(soxr.resample(audio[0].numpy(), sampling_rate, 16000, quality="HQ")
                                   .astype(np.float32)).unsqueeze(0)
        sv_emb = [sv_model.compute_embedding3(audio16)]
    ge, ge_text = vits.build_decode_condition([refer_spec], sv_emb)

    # -- text features: TextPreprocessor.get_bert_inf per segment ----------------------------
    def phones_and_bert(segments: list[dict]) -> tuple[list[int], torch.Tensor]:
        ids, parts = [], []
        for seg in segments:
            ids.extend(seg["phone_ids"])
            if seg["lang"] == "zh":
                parts.append(get_bert_feature(bert_model, bert_tokenizer, seg["norm_text"], seg["word2ph"], "cpu"))
            else:
                parts.append(torch.zeros((1024, len(seg["phone_ids"])), dtype=torch.float32))
        return ids, torch.cat(parts, dim=1)

    prompt_ids, prompt_bert = phones_and_bert(spec["prompt"])
    target_ids, target_bert = phones_and_bert(spec["target"])

    # -- run: T2S then SoVITS decode --------------------------------------------------------
    all_ids = torch.LongTensor([prompt_ids + target_ids])
    all_bert = torch.cat([prompt_bert, target_bert], 1).unsqueeze(0)
    s = spec["sampling"]
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    started = time.perf_counter()
    pred_list, idx_list = t2s.model.infer_panel(
        all_ids, torch.LongTensor([all_ids.shape[1]]), prompt_semantic.unsqueeze(0), all_bert,
        top_k=s["top_k"], top_p=s["top_p"], temperature=s["temperature"], early_stop_num=early_stop_num,
        repetition_penalty=s["repetition_penalty"])
    pred = pred_list[0][-idx_list:] if isinstance(idx_list, int) else pred_list[0][-idx_list[0]:]
    t2s_s = time.perf_counter() - started

    def decode(tokens: torch.Tensor) -> np.ndarray:
        out = vits.decode(tokens.view(1, 1, -1), torch.LongTensor([target_ids]), [refer_spec],
                          noise_scale=spec["noise_scale"], sv_emb=sv_emb, ge=ge, ge_text=ge_text)
        return out.detach()[0, 0].numpy()

    started = time.perf_counter()
    audio = decode(pred)
    decode_s = time.perf_counter() - started
    result = {"tokens": pred.numpy().astype(np.int64), "prompt_tokens": prompt_semantic.numpy().astype(np.int64),
              "audio": audio, "ge": ge.numpy(), "t2s_s": np.array(t2s_s), "decode_s": np.array(decode_s)}
    if spec.get("decode_tokens"):
        result["audio_of_given_tokens"] = decode(torch.LongTensor(spec["decode_tokens"]))
    np.savez(spec["output"], **result)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
