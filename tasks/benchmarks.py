"""The SuperGLUE, GLUE and CLUE datasets (tasks/sources.py `Dataset`s), keyed by name ('glue_rte', ...).

Local layout under the data dir (the official file names; README of /work/shared/data):
  super_glue/<Task>/{train,val,test}.jsonl     BoolQ CB COPA MultiRC ReCoRD RTE WiC WSC
  glue/<Task>/{train,dev,test}.tsv             CoLA SST-2 MRPC QQP STS-B QNLI RTE WNLI;
                                               MNLI: train, dev_matched, dev_mismatched, test_matched, test_mismatched
  clue/<task>/{train,dev,test}.json            afqmc tnews iflytek cmnli csl cluewsc2020 (JSON lines);
                                               ocnli: train.50k (+ train.3k, train.10k as splits train_3k, train_10k)
The NER datasets (conll2003/{train,valid,test}.txt, clue/cluener/{train,dev,test}.json) are tasks/ner.py's.
"""
from typing import Any, Mapping, Sequence

from tasks.readers import JSON_LINES, UNLABELED, Converter, fields_and_label, tsv
from tasks.sources import FLOAT, INT, STRING, STRINGS, Dataset, LocalFiles, text_features

GLUE_TFDS_VERSION = "2.0.0"  # seqio needs versioned TFDS names; these are tensorflow-datasets 4.9's
SUPER_GLUE_TFDS_VERSION = "1.0.2"  # (the one T5 uses)


def _splits(directory: str, train: str, validation: str, test: str, extension: str) -> dict[str, str]:
  return {split: f"{directory}/{stem}.{extension}"
          for split, stem in (("train", train), ("validation", validation), ("test", test))}


def _super_glue(task: str, directory: str, features: Mapping[str, Any], convert: Converter,
                tfds_config: str | None = None) -> Dataset:
  return Dataset(f"super_glue_{task}", features,
                 LocalFiles(_splits(f"super_glue/{directory}", "train", "val", "test", "jsonl"), JSON_LINES, convert),
                 tfds_name=f"super_glue/{tfds_config or task}:{SUPER_GLUE_TFDS_VERSION}")


def _glue(task: str, directory: str, fields: Mapping[str, str], label_key: str, label_values: Sequence[str] | None,
          files: Mapping[str, str] | None = None, file_format: Any = None,
          tfds_splits: Mapping[str, str] | None = None) -> Dataset:
  features = text_features(*fields, label=FLOAT if label_values is None else INT)
  files = files or _splits(f"glue/{directory}", "train", "dev", "test", "tsv")
  return Dataset(f"glue_{task}", features,
                 LocalFiles(files, file_format or tsv(), fields_and_label(fields, label_key, label_values)),
                 tfds_name=f"glue/{task}:{GLUE_TFDS_VERSION}", tfds_splits=tfds_splits or {})


def _clue(task: str, fields: Mapping[str, str], label_values: Sequence[str], files: Mapping[str, str] | None = None,
          **convert_options) -> Dataset:
  int_fields = convert_options.get("int_fields", ())
  features = text_features(*(f for f in fields if f not in int_fields), **{f: INT for f in int_fields})
  return Dataset(f"clue_{task}", features,
                 LocalFiles(files or _splits(f"clue/{task}", "train", "dev", "test", "json"), JSON_LINES,
                            fields_and_label(fields, "label", label_values, **convert_options)))


def _same(*names: str) -> dict[str, str]:
  return {name: name for name in names}


def _multirc(record: dict, row: int) -> list[dict]:
  """One example per answer option, as TFDS's super_glue/multirc."""
  del row
  passage = record["passage"]
  return [{"paragraph": str(passage["text"]), "question": str(question["question"]), "answer": str(answer["text"]),
           "label": UNLABELED if answer.get("label") is None else int(bool(answer["label"])),
           "idx": {"paragraph": int(record["idx"]), "question": int(question["idx"]), "answer": int(answer["idx"])}}
          for question in passage["questions"] for answer in question["answers"]]


def _record(record: dict, row: int) -> list[dict]:
  """One example per query, entities/answers as sorted unique strings (TFDS's super_glue/record)."""
  del row
  text = str(record["passage"]["text"])
  entities = sorted({text[entity["start"]:entity["end"] + 1] for entity in record["passage"]["entities"]})
  return [{"passage": text, "query": str(qa["query"]), "entities": entities,
           "answers": sorted({str(answer["text"]) for answer in qa.get("answers", [])}),
           "idx": {"passage": int(record["idx"]), "query": int(qa["idx"])}} for qa in record["qas"]]


BOOL = ("False", "True")
BINARY = ("0", "1")
NLI3 = ("entailment", "neutral", "contradiction")  # MNLI's (and TFDS's) label order
ENTAILMENT2 = ("entailment", "not_entailment")
TNEWS_CODES = tuple(str(code) for code in range(100, 117) if code not in (105, 111))  # 15 used codes
WSC_FIELDS = {"text": "text", "span1_index": "span1_index", "span2_index": "span2_index",
              "span1_text": "span1_text", "span2_text": "span2_text"}
WSC_FEATURES = text_features("text", "span1_text", "span2_text", span1_index=INT, span2_index=INT)
COLA_COLUMNS = ("source", "label", "author_mark", "sentence")  # train/dev have no header
MNLI_FILES = {"train": "train", "validation": "dev_matched", "validation_matched": "dev_matched",
              "validation_mismatched": "dev_mismatched", "test": "test_matched", "test_matched": "test_matched",
              "test_mismatched": "test_mismatched"}

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    # SuperGLUE (TFDS super_glue/<task>; WSC as super_glue/wsc.fixed, the version T5 uses)
    _super_glue("boolq", "BoolQ", text_features("question", "passage"),
                fields_and_label(_same("question", "passage"), "label", BOOL, "idx")),
    _super_glue("cb", "CB", text_features("premise", "hypothesis"),
                fields_and_label(_same("premise", "hypothesis"), "label", ("entailment", "contradiction", "neutral"),
                                 "idx")),
    _super_glue("copa", "COPA", text_features("premise", "choice1", "choice2", "question"),
                fields_and_label(_same("premise", "choice1", "choice2", "question"), "label", BINARY, "idx")),
    _super_glue("multirc", "MultiRC",
                {**text_features("paragraph", "question", "answer"), "idx": {"paragraph": INT, "question": INT,
                                                                            "answer": INT}}, _multirc),
    _super_glue("record", "ReCoRD", {"passage": STRING, "query": STRING, "entities": STRINGS, "answers": STRINGS,
                                     "idx": {"passage": INT, "query": INT}}, _record),
    _super_glue("rte", "RTE", text_features("premise", "hypothesis"),
                fields_and_label(_same("premise", "hypothesis"), "label", ENTAILMENT2, "idx")),
    _super_glue("wic", "WiC", text_features("word", "sentence1", "sentence2", start1=INT, start2=INT, end1=INT,
                                            end2=INT),
                fields_and_label(_same("word", "sentence1", "sentence2", "start1", "start2", "end1", "end2"), "label",
                                 BOOL, "idx", int_fields=("start1", "start2", "end1", "end2"))),
    _super_glue("wsc", "WSC", WSC_FEATURES,
                fields_and_label(WSC_FIELDS, "label", BOOL, "idx", flatten="target",
                                 int_fields=("span1_index", "span2_index")), tfds_config="wsc.fixed"),
    # GLUE (TFDS glue/<task>)
    _glue("cola", "CoLA", _same("sentence"), "label", BINARY,
          file_format={"train": tsv(COLA_COLUMNS), "validation": tsv(COLA_COLUMNS), "test": tsv()}),
    _glue("sst2", "SST-2", _same("sentence"), "label", BINARY),
    _glue("mrpc", "MRPC", {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality", BINARY),
    _glue("qqp", "QQP", _same("question1", "question2"), "is_duplicate", BINARY),
    _glue("stsb", "STS-B", _same("sentence1", "sentence2"), "score", None),
    _glue("mnli", "MNLI", {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label", NLI3,
          files={split: f"glue/MNLI/{stem}.tsv" for split, stem in MNLI_FILES.items()},
          tfds_splits={split: stem.replace("dev", "validation") for split, stem in MNLI_FILES.items()}),
    _glue("qnli", "QNLI", _same("question", "sentence"), "label", ENTAILMENT2),
    _glue("rte", "RTE", _same("sentence1", "sentence2"), "label", ENTAILMENT2),
    _glue("wnli", "WNLI", _same("sentence1", "sentence2"), "label", BINARY),
    # CLUE (JSON lines; no TFDS dataset)
    _clue("afqmc", _same("sentence1", "sentence2"), BINARY),
    _clue("tnews", _same("sentence"), TNEWS_CODES),
    _clue("iflytek", _same("sentence"), tuple(str(i) for i in range(119))),
    _clue("cmnli", _same("sentence1", "sentence2"), NLI3, drop_labels=("-",)),
    _clue("ocnli", _same("sentence1", "sentence2"), NLI3, drop_labels=("-",),
          files={**_splits("clue/ocnli", "train.50k", "dev", "test", "json"),
                 "train_3k": "clue/ocnli/train.3k.json", "train_10k": "clue/ocnli/train.10k.json"}),
    _clue("csl", _same("abst", "keyword"), BINARY),
    _clue("cluewsc2020", WSC_FIELDS, ("false", "true"), flatten="target", int_fields=("span1_index", "span2_index")),
]}
