"""Build RadioGenomicsLib/resources/gencode_v36_genes.tsv.gz from Debian's Bioconductor data.

The GDC's STAR - Counts files list the 60,660 genes of GENCODE v36 (`_PAR_Y` ids
included). Two Debian packages hold what the table needs:

- r-bioc-tcgabiolinksgui.data: `data/gencode.v36.annotation.genes.rda`, the gene
  records of the GENCODE v36 GTF (versioned gene_id, gene_name, gene_type, span);
- r-bioc-tcgabiolinks: object `geneInfoHT` of `data/Rdata.rdb`, the exonic gene
  lengths TCGAbiolinks uses for the GDC's harmonized data (unversioned ids). Genes it
  lacks (about 0.2 %) keep their genomic span as length.

    python Resources/build_gencode_table.py [--out PATH]

Needs `apt-get download` (Debian's archive) and the `rdata` package.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import subprocess
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import rdata

GENES_PACKAGE = "r-bioc-tcgabiolinksgui.data"
GENES_MEMBER = "usr/lib/R/site-library/TCGAbiolinksGUI.data/data/gencode.v36.annotation.genes.rda"
LENGTHS_PACKAGE = "r-bioc-tcgabiolinks"
LENGTHS_DB = "usr/lib/R/site-library/TCGAbiolinks/data/Rdata"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "RadioGenomicsLib" / "resources" / \
    "gencode_v36_genes.tsv.gz"


def unpack_debian_package(package: str, into: Path) -> tuple[Path, str]:
    """`apt-get download` a package and unpack it; returns (root, the .deb's file name)."""
    subprocess.run(["apt-get", "download", package], cwd=into, check=True,
                   capture_output=True)
    deb = next(into.glob(f"{package}_*.deb"))
    root = into / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root, deb.name


def read_lazyload_object(database: Path, name: str):
    """One object of an R lazy-load database (`NAME.rdb` with its index `NAME.rdx`).

    Each object in the .rdb is a 4-byte length, then (for R's compression 2 and 3) a
    type byte and the compressed serialization: 'Z' raw LZMA2, '2' bzip2, '1' zlib,
    '0' none; with compression 1 it is zlib right after the length.
    """
    index = _read_rds(database.with_suffix(".rdx").read_bytes())
    offset, length = (int(v) for v in index["variables"][name])
    chunk = database.with_suffix(".rdb").read_bytes()[offset:offset + length]
    kind, body = chunk[4:5], chunk[5:]
    if kind == b"Z":
        lzma2 = {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}  # R's setting
        data = lzma.decompress(body, format=lzma.FORMAT_RAW, filters=[lzma2])
    elif kind == b"2":
        data = bz2.decompress(body)
    elif kind == b"0":
        data = body
    elif kind == b"1":
        data = zlib.decompress(body)
    else:
        data = zlib.decompress(chunk[4:])
    return _read_rds(data)


def _read_rds(data: bytes):
    with warnings.catch_warnings():  # lazy-load objects are plain serializations (RDS)
        warnings.filterwarnings("ignore", "Unknown file type", UserWarning)
        return rdata.conversion.convert(rdata.parser.parse_data(data))


def gencode_genes(rda: Path) -> pd.DataFrame:
    """gene_id, gene_name, gene_type and genomic span of the GRanges in the .rda."""
    granges = rdata.conversion.convert(rdata.parser.parse_file(rda))[
        "gencode.v36.annotation.genes"]
    columns = granges.elementMetadata.listData
    return pd.DataFrame({
        "gene_id": np.asarray(columns["gene_id"], dtype=str),
        "gene_name": np.asarray(columns["gene_name"], dtype=str),
        "gene_type": np.asarray(columns["gene_type"], dtype=str),
        "span_bp": np.asarray(granges.ranges.width, dtype=np.int64),
    })


def build_table(genes: pd.DataFrame, exonic_lengths: pd.Series) -> pd.DataFrame:
    unversioned = genes["gene_id"].str.replace(r"\.\d+(_PAR_Y)?$", "", regex=True)
    exonic = exonic_lengths.reindex(unversioned.to_numpy()).to_numpy()
    length = np.where(np.isnan(exonic), genes["span_bp"], exonic).astype(np.int64)
    return genes.drop(columns="span_bp").assign(length_bp=length)


def write_table(table: pd.DataFrame, out: Path, provenance: list[str]) -> None:
    text = "".join(f"# {line}\n" for line in provenance)
    text += table.to_csv(sep="\t", index=False, lineterminator="\n")
    buffer = io.BytesIO()
    # mtime=0 and no file name: the same input gives the same bytes
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        genes_root, genes_deb = unpack_debian_package(GENES_PACKAGE, Path(tmp))
        lengths_root, lengths_deb = unpack_debian_package(LENGTHS_PACKAGE, Path(tmp))
        genes = gencode_genes(genes_root / GENES_MEMBER)
        exonic = read_lazyload_object(lengths_root / LENGTHS_DB, "geneInfoHT")["geneLength"]
    table = build_table(genes, exonic)
    fallback = int((~genes["gene_id"].str.replace(r"\.\d+(_PAR_Y)?$", "", regex=True)
                    .isin(exonic.index)).sum())
    provenance = [
        "GENCODE v36 genes (the GDC STAR - Counts gene model), built by "
        "Resources/build_gencode_table.py",
        f"gene_id, gene_name, gene_type: {genes_deb} {GENES_MEMBER.split('/')[-1]}",
        f"length_bp: exonic length from {lengths_deb} Rdata geneInfoHT; "
        f"{fallback} genes absent there keep their genomic span",
    ]
    write_table(table, args.out, provenance)
    print(f"{args.out}: {len(table)} genes, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
