import os

if "WORLD_SIZE" in os.environ:  # a torchrun worker: DDP's C++ notes (unused parameters) are not for users
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from coreg_edge.cli import main  # noqa: E402

if __name__ == "__main__":
    from coreg_edge.training.launch import watch_launcher

    watch_launcher()  # a worker of `train --nproc` stops when its launcher is gone (nothing otherwise)
    main()
