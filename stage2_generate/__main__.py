"""python -m stage2_generate run --config configs/demo.yaml"""

from stage2_generate.cli import main

if __name__ == "__main__":
    main()
