"""python -m stage1_decode run --config configs/demo.yaml"""

from stage1_decode.cli import main

if __name__ == "__main__":
    main()
