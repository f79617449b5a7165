"""The shared layer: what every stage uses and no stage owns.

Not a stage: nothing here knows about shards, CLIP training or GeoChat. Config engine (``config``), atomic file
writes and file listing (``files``), run guards (``guards``: output locks, parent-death stop), developer-data
location (``paths``), and the formats that cross a stage boundary (``formats``), each with one owner module that
both sides import. Stage packages import from here; this package imports from no stage.
"""
