import sys

sys.path.insert(0, "/app")

from fizzbuzz import fizzbuzz


def test_numbers() -> None:
    assert [fizzbuzz(n) for n in (1, 2, 4, 7)] == ["1", "2", "4", "7"]


def test_fizz_and_buzz() -> None:
    assert (fizzbuzz(3), fizzbuzz(9), fizzbuzz(5), fizzbuzz(10)) == ("Fizz", "Fizz", "Buzz", "Buzz")


def test_fizzbuzz() -> None:
    assert (fizzbuzz(15), fizzbuzz(45)) == ("FizzBuzz", "FizzBuzz")
