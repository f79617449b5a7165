"""The formats that cross a stage boundary, one owner module each, imported by the side that writes and the side
that reads: :mod:`rs_common.formats.shard_sample` (a webdataset shard's samples: members, sample json, key rule,
build marker/manifest, a reader of one shard), :mod:`rs_common.formats.karpathy` (Karpathy caption json: stage 0
builds from it, stage-1 evaluation scores on it), :mod:`rs_common.formats.dota` (DOTA labelTxt lines and the
image/label pairing: stage 0's reader builds shards from them, stage-1 counting evaluation counts objects in them),
:mod:`rs_common.formats.numbers` (the number syntax of annotation files), :mod:`rs_common.formats.llava_record` (GeoChat_Instruct / LLaVA
records: the instruction builder writes them, fine-tuning and evaluation read them) and
:mod:`rs_common.formats.conversation` (the vicuna_v1 template every GeoChat prompt is rendered with)."""
