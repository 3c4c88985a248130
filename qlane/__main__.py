from qlane.cli import main

main()
