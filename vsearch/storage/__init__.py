"""Storage: the index directory: lock, generation commit, repair, manifest SQL, vector files, meta.json, side logs.

May import: ground (errors, atomic, identity) only. Knows nothing of models, vectors or search.

The index directory: the writer's lock, and the commit of ``meta.json``.

Layout (format version 1)::

    INDEX_DIR/
      meta.json             commit record of the last consolidation; written last (see below);
                            records the size and SHA-256 of every file it names (``checksums``)
      manifest.sqlite       files (the writer's working state: path, size, mtime_ns, digest, row,
                            pending chunk, skip) and committed (each kept generation's frozen
                            row -> file mapping); see ``manifest``
      chunks/NNNNNN.npy     vectors embedded since the last consolidation (crash-safe progress)
      vectors.GGGGGG.npy    float32 (count, dim), L2-normalised; row i = the file whose row is i
      index.GGGGGG.ann      Annoy (angular) over that generation's vectors, when built; meta.json
                            records its size in bytes, checked before Annoy maps the file
      index.GGGGGG.ivfpq    or IVF-PQ (faiss, ``build-index --index ivfpq``) over the vectors search
                            ranks against; meta.json ("ivfpq") records its parameters, size, sha256
      vectors.GGGGGG.FORMAT[.HASH].npy  optional: the search copy in a compressed format
                            (build-index --vectors fp16|pcaD[w]; ``compress``): what search, the
                            stored-vector fast path, MMR/dedupe and Annoy read instead of the raw
                            vectors, which stay the source of truth (refits, DBA, merges, undo)
      pca.HASH.npz          the PCA the search copy was made with (meta.json records its SHA-256);
                            fitted once, reused by incremental runs, refitted with --refit
      vectors.GGGGGG.dbaN.npy  optional: database-side augmented copy of the vectors (build-index
                            --dba N), in the search space (of the search copy when there is one);
                            searched instead of them. Annoy is then built over it.
      head.<sha12>.npz      optional: a projection head fitted by ``vsearch train`` (``adapter``) on
                            the search space, named with its hash in meta.json's ``adapter`` key
      <search vectors>.head-<sha12>.npy  that head's projected copy of the generation's search-space
                            vectors, written before each meta.json that names the head (every commit)
      lock                  flock'd by the one writer
      marks.jsonl           "not a duplicate" marks by content digest (``marks``); outlives --rebuild
      undo/NNNN-DATE.jsonl  undo logs of ``duplicates --move-to/--trash --yes`` (``actions``); likewise

Why a generation number in the file names: a consolidation writes the new vectors beside the
old ones, renumbers the manifest, snapshots the new row mapping and bumps its generation in one
SQLite transaction, then replaces ``meta.json``. Nothing half-written is ever loaded: every file
goes to a temporary name in the same folder, is flushed and fsynced, then ``os.replace``d.

Readers and a concurrent commit: a reader trusts ``meta.json`` and sees exactly the generation it
names, never a mix. The manifest keeps the row mapping of the newest two generations
(``committed``), and the writer keeps the previous generation's files until the next commit, so
a reader that read ``meta.json`` just before a commit (or holds the index open across one)
still finds its own generation's vectors, Annoy file and paths. A reader opening while a commit
is half done reads ``meta.json`` again when the manifest no longer holds its generation. A
process that holds an index open across two commits gets one clear error asking it to open the
index again, never paths of one generation paired with vectors of another. The price: the
previous generation's vector and Annoy files stay on disk until the next commit.

A writer that finds SQLite's generation ahead of ``meta.json`` (a crash between the two) finishes
the commit. Files that cannot be read are repaired where no information is lost (a damaged
chunk's files are embedded again; so are the files of unreadable committed vectors), and
refused otherwise with one remedy, ``build_index(FOLDER, rebuild=True)`` (on the command line,
``vsearch build-index FOLDER --rebuild``), which starts a clean index and keeps the old manifest's
files and vectors where they can be trusted.
"""
