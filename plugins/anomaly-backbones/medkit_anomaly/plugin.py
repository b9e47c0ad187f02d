"""anomaly-backbones' plugin module: what it registers. Targets are strings, so listing plugins never imports torch."""

from medkit import ArchitectureEntry, DatasetEntry, Recipe, ScorerEntry, hookimpl

MEDKIT_API = ">=1.0,<2"

METHODS = {
    "spade": "SPADE: image kNN on pooled features, then pixel kNN against the K retrieved images (FAISS)",
    "padim": "PaDiM: per-position Gaussian over a random channel subset, Mahalanobis distance",
    "patchcore": "PatchCore: greedy coreset memory bank of 3x3-aggregated patches, FAISS nearest distance",
    "cflow": "CFLOW-AD: conditional normalising flows (FrEIA) over multi-scale features",
}


@hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="fit",
            target="medkit_anomaly.recipes.fit:fit",
            config="medkit_anomaly.config:FitAnomalyConfig",
            summary="fit a method on normal images and test it per category (embedded textures without --data)",
            default=True,
        )
    )
    register(
        Recipe(
            name="predict",
            target="medkit_anomaly.recipes.predict:predict",
            config="medkit_anomaly.config:PredictAnomalyConfig",
            summary="score a folder of new images (no ground truth) with a fitted model: score, decision, "
            "anomaly map (.npy) and overlay (PNG) per image, predictions.csv",
        )
    )
    register(
        Recipe(
            name="test",
            target="medkit_anomaly.recipes.test:test",
            config="medkit_anomaly.config:TestAnomalyConfig",
            summary="test a fit run's models again, on its own data or another MVTec-layout folder (--data)",
        )
    )
    register(
        Recipe(
            name="study",
            target="medkit_anomaly.recipes.study:study",
            config="medkit_anomaly.studies:StudyAnomalyConfig",
            summary="the backbone study: methods x backbones x weight sources as fit runs, the thesis' tables "
            "and a quality-vs-speed plot; small on CPU, --set scale=thesis --data MVTEC for the full grid",
            # a resumed study keeps its finished trials and may change its grid (drop or add backbones)
            resumable=("methods", "backbones", "weight_sources"),
        )
    )


@hookimpl
def register_architectures(register):
    for name, summary in METHODS.items():
        register(
            ArchitectureEntry(
                name=name, target=f"medkit_anomaly.models:{name}", task="anomaly", summary=summary
            )
        )


@hookimpl
def register_datasets(register):
    register(
        DatasetEntry(
            name="textures",
            target="medkit_anomaly.textures:embedded_textures",
            task="anomaly",
            embedded=True,
            summary="scikit-image's texture photographs with synthetic scratches, holes, stains and pastes (MVTec layout)",
        )
    )
    register(
        DatasetEntry(
            name="mvtec",
            target="medkit_anomaly.data:MVTecCategory",
            task="anomaly",
            summary="any folder in MVTec AD's layout: <category>/train/good, test/<defect>, ground_truth/<defect>",
        )
    )


@hookimpl
def register_scorers(register):
    register(
        ScorerEntry(
            name="anomaly",
            target="medkit_anomaly.metrics:AnomalyScorer",
            summary="image ROC-AUC, pixel ROC-AUC, AUPRO (FPR <= 0.3), best F1; NaN with a reason when undefined",
        )
    )
