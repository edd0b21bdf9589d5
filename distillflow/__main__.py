from distillflow.cli import main

main()
