"""Neuronpedia's tables that its admin import fills, pinned from its public repository
(github.com/hijohnnylin/neuronpedia, commit ebb8426f):

- columns and types: apps/webapp/prisma/schema.prisma, models SourceRelease, Model, SourceSet,
  Source, Neuron, Activation, Explanation (scalar columns only; relations are not columns);
- how files are read: apps/webapp/app/api/admin/import/route.ts (release.jsonl, model.jsonl,
  sourceset.jsonl, source.jsonl through prisma create; features/, activations/, explanations/
  *.jsonl.gz) and apps/webapp/lib/db/import.ts (`jsonb_to_recordset` with the columns named by
  the first line of each file, so every line must carry the same keys);
- batches of 1,024 features: utils/neuronpedia-utils/neuronpedia_utils/export-data.py.

Each column is (type, nullable, default): a column that is neither nullable nor has a default must
be present and non-null. Prisma-level defaults (`cuid()`) are not database defaults, so the raw
imports of Activation and Explanation need their `id`; `@default(now())` is the database's.
"""

from __future__ import annotations

STRING, INT, FLOAT, BOOL, JSON, VISIBILITY = "String", "Int", "Float", "Boolean", "Json", "Visibility"
VISIBILITIES = ("PUBLIC", "UNLISTED", "PRIVATE")
BATCH_FEATURES = 1024


def col(kind: str, nullable: bool = False, default: bool = False) -> tuple[str, bool, bool]:
    return kind, nullable, default


TABLES: dict[str, dict[str, tuple[str, bool, bool]]] = {
    "SourceRelease": {
        "name": col(STRING),
        "visibility": col(VISIBILITY, default=True),
        "isNewUi": col(BOOL, default=True),
        "featured": col(BOOL, default=True),
        "description": col(STRING),
        "descriptionShort": col(STRING, nullable=True),
        "urls": col(STRING + "[]"),
        "creatorEmail": col(STRING, nullable=True),
        "creatorName": col(STRING),
        "creatorNameShort": col(STRING, nullable=True),
        "creatorId": col(STRING),
        "defaultSourceSetName": col(STRING, nullable=True),
        "defaultSourceId": col(STRING, nullable=True),
        "defaultUmapSourceIds": col(STRING + "[]", default=True),
        "createdAt": col(STRING, default=True),
    },
    "Model": {
        "id": col(STRING),
        "displayNameShort": col(STRING, default=True),
        "displayName": col(STRING, default=True),
        "creatorId": col(STRING),
        "tlensId": col(STRING, nullable=True),
        "openRouterId": col(STRING, nullable=True),
        "dimension": col(INT, nullable=True),
        "thinking": col(BOOL, default=True),
        "visibility": col(VISIBILITY, default=True),
        "defaultSourceSetName": col(STRING, nullable=True),
        "defaultSourceId": col(STRING, nullable=True),
        "defaultGraphSourceSetName": col(STRING, nullable=True),
        "inferenceEnabled": col(BOOL, default=True),
        "instruct": col(BOOL, default=True),
        "layers": col(INT),
        "neuronsPerLayer": col(INT),
        "createdAt": col(STRING, default=True),
        "owner": col(STRING),
        "updatedAt": col(STRING, default=True),
        "website": col(STRING, nullable=True),
    },
    "SourceSet": {
        "modelId": col(STRING),
        "name": col(STRING),
        "hasDashboards": col(BOOL, default=True),
        "allowInferenceSearch": col(BOOL, default=True),
        "visibility": col(VISIBILITY, default=True),
        "description": col(STRING),
        "type": col(STRING, default=True),
        "creatorName": col(STRING),
        "urls": col(STRING + "[]"),
        "creatorEmail": col(STRING, nullable=True),
        "creatorId": col(STRING),
        "releaseName": col(STRING, nullable=True),
        "hasGraphs": col(BOOL, default=True),
        "graphEnabled": col(BOOL, default=True),
        "similarityMatrixEnabled": col(BOOL, default=True),
        "defaultOfModelId": col(STRING, nullable=True),
        "defaultGraphModelId": col(STRING, nullable=True),
        "defaultRange": col(INT, default=True),
        "defaultShowBreaks": col(BOOL, default=True),
        "showDfa": col(BOOL, default=True),
        "showCorrelated": col(BOOL, default=True),
        "showHeadAttribution": col(BOOL, default=True),
        "showUmap": col(BOOL, default=True),
        "createdAt": col(STRING, default=True),
    },
    "Source": {
        "id": col(STRING),
        "modelId": col(STRING),
        "hasDashboards": col(BOOL, default=True),
        "inferenceEnabled": col(BOOL, default=True),
        "saelensConfig": col(JSON, nullable=True),
        "saelensRelease": col(STRING, nullable=True),
        "saelensSaeId": col(STRING, nullable=True),
        "hfRepoId": col(STRING, nullable=True),
        "hfFolderId": col(STRING, nullable=True),
        "visibility": col(VISIBILITY, default=True),
        "defaultOfModelId": col(STRING, nullable=True),
        "setName": col(STRING),
        "creatorId": col(STRING),
        "hasUmap": col(BOOL, default=True),
        "hasUmapLogSparsity": col(BOOL, default=True),
        "hasUmapClusters": col(BOOL, default=True),
        "num_prompts": col(INT, nullable=True),
        "num_tokens_in_prompt": col(INT, nullable=True),
        "dataset": col(STRING, nullable=True),
        "notes": col(STRING, nullable=True),
        "cosSimMatchModelId": col(STRING, nullable=True),
        "cosSimMatchSourceId": col(STRING, nullable=True),
        "createdAt": col(STRING, default=True),
    },
    "Neuron": {
        "modelId": col(STRING),
        "layer": col(STRING),
        "index": col(STRING),
        "sourceSetName": col(STRING, nullable=True),
        "creatorId": col(STRING, nullable=True),
        "createdAt": col(STRING, default=True),
        "maxActApprox": col(FLOAT, nullable=True, default=True),
        "hasVector": col(BOOL, default=True),
        "vector": col(FLOAT + "[]", default=True),
        "vectorLabel": col(STRING, nullable=True),
        "vectorDefaultSteerStrength": col(FLOAT, nullable=True, default=True),
        "hookName": col(STRING, nullable=True),
        "topkCosSimIndices": col(INT + "[]", default=True),
        "topkCosSimValues": col(FLOAT + "[]", default=True),
        "neuron_alignment_indices": col(INT + "[]", default=True),
        "neuron_alignment_values": col(FLOAT + "[]", default=True),
        "neuron_alignment_l1": col(FLOAT + "[]", default=True),
        "correlated_neurons_indices": col(INT + "[]", default=True),
        "correlated_neurons_pearson": col(FLOAT + "[]", default=True),
        "correlated_neurons_l1": col(FLOAT + "[]", default=True),
        "correlated_features_indices": col(INT + "[]", default=True),
        "correlated_features_pearson": col(FLOAT + "[]", default=True),
        "correlated_features_l1": col(FLOAT + "[]", default=True),
        "neg_str": col(STRING + "[]", default=True),
        "neg_values": col(FLOAT + "[]", default=True),
        "pos_str": col(STRING + "[]", default=True),
        "pos_values": col(FLOAT + "[]", default=True),
        "frac_nonzero": col(FLOAT, default=True),
        "freq_hist_data_bar_heights": col(FLOAT + "[]", default=True),
        "freq_hist_data_bar_values": col(FLOAT + "[]", default=True),
        "logits_hist_data_bar_heights": col(FLOAT + "[]", default=True),
        "logits_hist_data_bar_values": col(FLOAT + "[]", default=True),
        "decoder_weights_dist": col(FLOAT + "[]", default=True),
        "umap_cluster": col(INT, nullable=True),
        "umap_log_feature_sparsity": col(FLOAT, nullable=True),
        "umap_x": col(FLOAT, nullable=True),
        "umap_y": col(FLOAT, nullable=True),
    },
    "Activation": {
        "id": col(STRING),
        "tokens": col(STRING + "[]"),
        "dataIndex": col(STRING, nullable=True),
        "index": col(STRING),
        "layer": col(STRING),
        "modelId": col(STRING),
        "dataSource": col(STRING, nullable=True),
        "maxValue": col(FLOAT),
        "maxValueTokenIndex": col(INT),
        "minValue": col(FLOAT),
        "values": col(FLOAT + "[]"),
        "dfaValues": col(FLOAT + "[]", default=True),
        "dfaTargetIndex": col(INT, nullable=True),
        "dfaMaxValue": col(FLOAT, nullable=True),
        "zQIndices": col(INT + "[]", default=True),
        "zKIndices": col(INT + "[]", default=True),
        "zValues": col(FLOAT + "[]", default=True),
        "creatorId": col(STRING),
        "createdAt": col(STRING, default=True),
        "lossValues": col(FLOAT + "[]", default=True),
        "logitContributions": col(STRING, nullable=True),
        "binMin": col(FLOAT, nullable=True),
        "binMax": col(FLOAT, nullable=True),
        "binContains": col(FLOAT, nullable=True),
        "qualifyingTokenIndex": col(INT, nullable=True),
    },
    "Explanation": {
        "id": col(STRING),
        "modelId": col(STRING),
        "layer": col(STRING),
        "index": col(STRING),
        "description": col(STRING),
        "authorId": col(STRING),
        "triggeredByUserId": col(STRING, nullable=True),
        "notes": col(STRING, nullable=True),
        "scoreV1": col(FLOAT, default=True),
        "scoreV2": col(FLOAT, nullable=True),
        "umap_x": col(FLOAT, nullable=True, default=True),
        "umap_y": col(FLOAT, nullable=True, default=True),
        "umap_cluster": col(INT, nullable=True, default=True),
        "umap_log_feature_sparsity": col(FLOAT, nullable=True, default=True),
        "typeName": col(STRING, nullable=True),
        "explanationModelName": col(STRING, nullable=True),
        "createdAt": col(STRING, default=True),
        "updatedAt": col(STRING, default=True),
    },
}

# The file of each table in a source's folder.
FILES = {
    "release.jsonl": "SourceRelease",
    "model.jsonl": "Model",
    "sourceset.jsonl": "SourceSet",
    "source.jsonl": "Source",
    "features": "Neuron",
    "activations": "Activation",
    "explanations": "Explanation",
}


def _is(kind: str, value: object) -> bool:
    if kind.endswith("[]"):
        return isinstance(value, list) and all(_is(kind[:-2], v) for v in value)
    if kind == STRING:
        return isinstance(value, str)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == VISIBILITY:
        return value in VISIBILITIES
    return kind == JSON


def problems(table: str, rows: list[dict], batch_features: int = BATCH_FEATURES) -> list[str]:
    """What in `rows` (the lines of one file) Neuronpedia's import would reject or misread."""
    columns = TABLES[table]
    out = []
    if rows:
        keys = list(rows[0])
        for n, row in enumerate(rows):
            if list(row) != keys:
                out.append(f"{table} line {n + 1}: keys {sorted(row)} differ from the first line's {sorted(keys)}")
    for n, row in enumerate(rows):
        for key, value in row.items():
            if key not in columns:
                out.append(f"{table} line {n + 1}: {key!r} is not a column")
                continue
            kind, nullable, _ = columns[key]
            if value is None:
                if not nullable:
                    out.append(f"{table} line {n + 1}: {key} is null but not nullable")
            elif not _is(kind, value):
                out.append(f"{table} line {n + 1}: {key} = {value!r:.60} is not {kind}")
        for key, (_, nullable, default) in columns.items():
            if not nullable and not default and key not in row:
                out.append(f"{table} line {n + 1}: required column {key} is missing")
    if table in ("Neuron", "Activation", "Explanation"):
        features = {row.get("index") for row in rows}
        if len(features) > batch_features:
            out.append(f"{table}: {len(features)} features in one batch; at most {batch_features}")
    return out
