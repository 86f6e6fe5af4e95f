from kpjax.cli import main

main()
