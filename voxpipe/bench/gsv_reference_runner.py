"""Drive the reference GPT-SoVITS implementation (the `gpt-sovits-cpufast` 0.1.0 package)
on one voice, in a process of its own: the package's top-level modules (`AR`, `module`,
`text`, `tools`) go on that process's sys.path, and nowhere else.

    python -m voxpipe.bench.gsv_reference_runner REFERENCE_ROOT INPUT.json
    python -m voxpipe.bench.gsv_reference_runner REFERENCE_ROOT VOICE.json --serve

`voxpipe bench gsv` starts it with --serve; the exactness tests run it on cases (through
tests/gsv_reference_runner.py, which calls this module). Nothing here imports voxpipe.

REFERENCE_ROOT is where the package was installed with `pip install --target`. INPUT.json
holds a list of cases; each names a voice's files, gives the prompt and target as phone
ids and per-language segments (norm_text, word2ph), the sampling settings, and the .npz
file that receives the reference semantic tokens and audio. The steps mirror the package's TTS pipeline
(TTS_infer_pack/TTS.py: init_t2s_weights, init_vits_weights, _set_prompt_semantic,
_get_ref_spec, run) with the package's own model classes and checkpoint readers.

With --serve the process loads VOICE.json's voice once (the keys of a case without
target and output, plus "warmup": requests served before it prints "ready"), then serves
batches of requests one request at a time, as the package's api_v2 does with its single
worker (T2S through `infer_panel_batch_infer`, its default `parallel_infer`, then one
SoVITS decode). Each stdin line is a JSON list of requests ({"target": segments, "seed":
int}); for each request a JSON line {"i", "done_s", "audio_s", "tokens"} goes to stdout,
where done_s counts from the moment the batch line was read, then {"total_s"} ends the
batch. Per request it computes what api_v2 computes after G2P: the target's BERT
features, the semantic tokens and the audio; the prompt's features are cached per voice
as api_v2 caches them. Anything the package prints goes to stderr.

One substitution: audio files are read with soundfile and resampled with soxr, as
voxpipe does (the package uses PyAV's resampler, upstream GPT-SoVITS librosa's soxr), so
that the comparison is about the models, not about resamplers.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def main(root: str, input_path: str, *flags: str) -> int:
    # The reference's own modules first: it imports them by their bare names.
    sys.path[:0] = [root, str(Path(root) / "GPT_SoVITS")]
    import torch

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    if "--serve" in flags:
        return serve(json.loads(Path(input_path).read_text(encoding="utf-8")))
    for case in json.loads(Path(input_path).read_text(encoding="utf-8")):
        run_case(case)
    return 0


_PRETRAINED: dict[tuple[str, str], object] = {}


def _cached(kind: str, path: str, build):
    if (kind, path) not in _PRETRAINED:
        _PRETRAINED[kind, path] = build()
    return _PRETRAINED[kind, path]


def load_voice(spec: dict) -> SimpleNamespace:
    """Both models, the feature models and the prompt (tokens, spectrogram, phones, BERT)."""
    import soundfile
    import soxr
    import torch

    from AR.models.t2s_lightning_module import Text2SemanticLightningModule
    from feature_extractor.cnhubert import CNHubert
    from module.mel_processing import spectrogram_torch
    from module.models import SynthesizerTrn
    from process_ckpt import get_sovits_version_from_path_fast, load_sovits_new
    from text.chinese_bert import load_model, load_tokenizer

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
    voice = SimpleNamespace(t2s=t2s, vits=vits, early_stop_num=early_stop_num, sampling_rate=sampling_rate,
                            prompt_semantic=prompt_semantic, refer_spec=refer_spec, sv_emb=sv_emb, ge=ge,
                            ge_text=ge_text, bert_model=bert_model, bert_tokenizer=bert_tokenizer)
    voice.prompt_ids, voice.prompt_bert = phones_and_bert(voice, spec["prompt"])
    return voice


def phones_and_bert(voice: SimpleNamespace, segments: list[dict]):
    """Text features as TextPreprocessor.get_bert_inf computes them, per segment."""
    import torch

    from text.chinese_bert import get_bert_feature

    ids, parts = [], []
    for seg in segments:
        ids.extend(seg["phone_ids"])
        if seg["lang"] == "zh":
            parts.append(get_bert_feature(voice.bert_model, voice.bert_tokenizer, seg["norm_text"], seg["word2ph"],
                                          "cpu"))
        else:
            parts.append(torch.zeros((1024, len(seg["phone_ids"])), dtype=torch.float32))
    return ids, torch.cat(parts, dim=1)


def decode(voice: SimpleNamespace, tokens, target_ids: list[int], noise_scale: float) -> np.ndarray:
    import torch

    out = voice.vits.decode(tokens.view(1, 1, -1), torch.LongTensor([target_ids]), [voice.refer_spec],
                            noise_scale=noise_scale, sv_emb=voice.sv_emb, ge=voice.ge, ge_text=voice.ge_text)
    return out.detach()[0, 0].numpy()


def run_case(spec: dict) -> None:
    import torch

    voice = load_voice(spec)
    target_ids, target_bert = phones_and_bert(voice, spec["target"])

    # -- run: T2S then SoVITS decode --------------------------------------------------------
    all_ids = torch.LongTensor([voice.prompt_ids + target_ids])
    all_bert = torch.cat([voice.prompt_bert, target_bert], 1).unsqueeze(0)
    s = spec["sampling"]
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    started = time.perf_counter()
    # api_v2's default decode (`parallel_infer`), as `serve_one` runs it.
    pred_list, idx_list = voice.t2s.model.infer_panel_batch_infer(
        [all_ids[0]], torch.LongTensor([all_ids.shape[1]]), voice.prompt_semantic.unsqueeze(0), [all_bert[0]],
        top_k=s["top_k"], top_p=s["top_p"], temperature=s["temperature"], early_stop_num=voice.early_stop_num,
        max_len=all_ids.shape[1], repetition_penalty=s["repetition_penalty"])
    pred = pred_list[0][-idx_list[0]:]
    t2s_s = time.perf_counter() - started

    started = time.perf_counter()
    audio = decode(voice, pred, target_ids, spec["noise_scale"])
    decode_s = time.perf_counter() - started
    result = {"tokens": pred.numpy().astype(np.int64), "prompt_tokens": voice.prompt_semantic.numpy().astype(np.int64),
              "audio": audio, "ge": voice.ge.numpy(), "t2s_s": np.array(t2s_s), "decode_s": np.array(decode_s)}
    np.savez(spec["output"], **result)


def serve_one(voice: SimpleNamespace, spec: dict, request: dict) -> tuple[np.ndarray, int]:
    """One request as api_v2's TTS.run handles it after G2P: seed, BERT, T2S, SoVITS. -> (audio, tokens)."""
    import torch

    torch.manual_seed(int(request["seed"]))  # TTS.run's set_seed
    target_ids, target_bert = phones_and_bert(voice, request["target"])
    all_ids = torch.LongTensor(voice.prompt_ids + target_ids)
    all_bert = torch.cat([voice.prompt_bert, target_bert], 1)
    s = spec["sampling"]
    pred_list, idx_list = voice.t2s.model.infer_panel_batch_infer(
        [all_ids], torch.LongTensor([len(all_ids)]), voice.prompt_semantic.unsqueeze(0), [all_bert],
        top_k=s["top_k"], top_p=s["top_p"], temperature=s["temperature"],
        early_stop_num=int(request.get("early_stop", voice.early_stop_num)),  # the request's stop limit
        max_len=len(all_ids), repetition_penalty=s["repetition_penalty"])
    pred = pred_list[0][-idx_list[0]:]
    return decode(voice, pred, target_ids, spec["noise_scale"]), len(pred)


def serve(spec: dict) -> int:
    import torch

    # Keep stdout for the protocol: whatever the package prints (even from C) goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.set_flush_denormal(True)  # as voxpipe's engine sets it: denormals crawl on the CPU
    voice = load_voice(spec)
    for warmup in spec.get("warmup", []):
        serve_one(voice, spec, warmup)
    out.write("ready\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        requests = json.loads(line)
        started = time.perf_counter()  # the batch has arrived: time 0 of every request in it
        for i, request in enumerate(requests):
            audio, tokens = serve_one(voice, spec, request)
            done = {"i": i, "done_s": time.perf_counter() - started, "audio_s": len(audio) / voice.sampling_rate,
                    "tokens": tokens}
            out.write(json.dumps(done) + "\n")
        out.write(json.dumps({"total_s": time.perf_counter() - started}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
