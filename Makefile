# One command to install and run the main job, one to install and run the tests.
#   make rollout                 -> .venv + `mirage rollout`: the shipped small model trained on
#                                   simulated rooms (mirage_core/weights, docs/model_card.md),
#                                   else --tiny (random weights, noise frames)
#   make rollout WEIGHTS=DIR     -> the same with the real Wan2.2-TI2V-5B weights in DIR
#   make rollout TINY=1          -> tiny random weights (the pipeline only; frames are noise)
#   make train-small             -> data (8,000 rooms + 16 held-out), codec, the small model's training
#   make eval-heldout            -> the memory ablation on held-out rooms (README table)
#   make test                    -> .venv (+ depth-anything-3, scripts/install_da3.sh) + ruff + pytest
#   make demo    -> `mirage demo memory` (memory only, no generator; video + plot)
#   make bench   -> `mirage bench memory` (figures in out/bench_memory.json)
#   make graph   -> `mirage launch sim_rollout`: the ROS 2 graph as rclpy processes (the shipped
#                   model when the checkout has one, else tiny:=true)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

WEIGHTS ?=
SIDE_BRANCH ?=
# the shipped small model, when the checkout has one (docs/model_card.md); else --tiny
SHIPPED := mirage_core/weights/mirage-small-rooms

.PHONY: install install-da3 rollout train-small eval-heldout demo test bench graph clean

install: $(VENV)/.installed

# torch is installed first and pinned: on CPU machines torch==2.13.0 is a local CPU wheel;
# any other spec would pull several GB of CUDA packages.
# ROS 2 Jazzy from PyPI wheels (requirements-ros-jazzy.txt: rclpy + Fast DDS, the standard
# messages, rosidl and ament_cmake), then the project's msg/srv/action (and tf2_msgs, which has
# no wheel) built with rosidl into the venv (scripts/build_ros_interfaces.py; docs/ros.md).
$(VENV)/.installed: pyproject.toml setup.py requirements-ros-jazzy.txt CMakeLists.txt \
		scripts/build_ros_interfaces.py $(wildcard msg/*.msg srv/*.srv action/*.action)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e ".[demo,test,ros]"
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-ros-jazzy.txt
	$(BIN)/python scripts/build_ros_interfaces.py --venv $(VENV)
	touch $@

# depth-anything-3's network code without its dependency list (see scripts/install_da3.sh and
# docs/perception.md: `pip install depth-anything-3` would replace torch and break imports).
install-da3: $(VENV)/.installed-da3

$(VENV)/.installed-da3: $(VENV)/.installed scripts/install_da3.sh
	scripts/install_da3.sh $(VENV)
	touch $@

rollout: install
	$(BIN)/mirage rollout --out out/rollout $(if $(WEIGHTS),--weights $(WEIGHTS),) \
		$(if $(or $(TINY),$(if $(WEIGHTS),,$(if $(wildcard $(SHIPPED)/mirage_tiny.json),,1))),--tiny,) \
		$(if $(SIDE_BRANCH),--side-branch $(SIDE_BRANCH),)

# The shipped model's recipe (docs/model_card.md): 400 rooms (lossless codec), the PCA codec
# fitted to their frames, those rooms re-encoded by it and 3,600 more synthesised straight into
# it (4,000 in all: 400 memorise) and 4,000 more (seeds 2 and 3), then three training stages
# on 2 cores (config/train_small.yaml from scratch, ~42 min; config/train_small_more.yaml from
# its export, ~42 min; config/train_small_stage3.yaml from that export on all 8,000 rooms with
# a weight average, ~45 min; each resumes where it stopped: run it again), then bake the last
# into the weights directory, set to read out with one pass of hole fill (measured better on
# held-out rooms; docs/model_card.md).
DATA ?= out/data
train-small: install
	$(BIN)/mirage data synth --out $(DATA)/rooms_heldout --vae space_time_to_depth \
		--n-clips 16 --frames 65 --held-out --threads 1
	$(BIN)/mirage data synth --out $(DATA)/rooms_train --vae space_time_to_depth \
		--n-clips 400 --frames 65 --threads 1
	$(BIN)/mirage codec fit-pca --data $(DATA)/rooms_train --heldout $(DATA)/rooms_heldout \
		--out out/codec_pca
	$(BIN)/mirage data reencode --src $(DATA)/rooms_train --vae out/codec_pca \
		--out $(DATA)/rooms_train_pca
	$(BIN)/mirage data synth --out $(DATA)/rooms_train_pca --vae out/codec_pca \
		--n-clips 2000 --frames 65 --threads 1
	$(BIN)/mirage data synth --out $(DATA)/rooms_train_pca_s1 --vae out/codec_pca \
		--n-clips 2000 --frames 65 --threads 1 --seed 1
	$(BIN)/mirage data synth --out $(DATA)/rooms_train_pca_s2 --vae out/codec_pca \
		--n-clips 2000 --frames 65 --threads 1 --seed 2
	$(BIN)/mirage data synth --out $(DATA)/rooms_train_pca_s3 --vae out/codec_pca \
		--n-clips 2000 --frames 65 --threads 1 --seed 3
	$(BIN)/mirage train --config config/train_small.yaml \
		--data $(DATA)/rooms_train_pca $(DATA)/rooms_train_pca_s1 \
		$(if $(wildcard out/train_small/checkpoints),--resume,)
	$(BIN)/python -m mirage_core.train.export out/train_small out/mirage-small-rooms-stage1
	$(BIN)/mirage train --config config/train_small_more.yaml \
		--data $(DATA)/rooms_train_pca $(DATA)/rooms_train_pca_s1 \
		$(if $(wildcard out/train_small_more/checkpoints),--resume,)
	$(BIN)/python -m mirage_core.train.export out/train_small_more out/mirage-small-rooms-stage2
	$(BIN)/mirage train --config config/train_small_stage3.yaml \
		--data $(DATA)/rooms_train_pca $(DATA)/rooms_train_pca_s1 \
		$(DATA)/rooms_train_pca_s2 $(DATA)/rooms_train_pca_s3 \
		$(if $(wildcard out/train_small_stage3/checkpoints),--resume,)
	$(BIN)/python -m mirage_core.train.export out/train_small_stage3 out/mirage-small-rooms \
		--readout-hole-fill 1
	$(BIN)/python -m mirage_core.train.plot out/train_small out/train_small_more \
		out/train_small_stage3 out/train_small_stage3/loss.png

eval-heldout: install
	$(BIN)/mirage eval heldout --weights out/mirage-small-rooms --n-clips 16 --steps 40 \
		--out out/eval_heldout

demo: install
	$(BIN)/mirage demo memory --out out/demo_memory

test: install install-da3
	$(BIN)/ruff check .
	$(BIN)/pytest -q

graph: install
	$(BIN)/mirage launch sim_rollout $(if $(WEIGHTS),weights:=$(WEIGHTS),\
		$(if $(wildcard $(SHIPPED)/mirage_tiny.json),,tiny:=true)) \
		$(if $(SIDE_BRANCH),side_branch:=$(SIDE_BRANCH),)

bench: install
	$(BIN)/mirage bench memory --json out/bench_memory.json

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
