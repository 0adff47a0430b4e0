from tests.ch06_attribution import test_hidden, wrong
from tests.harness import wrong_variant_test

test_known_wrong_variant_fails_a_hidden_check = wrong_variant_test(wrong.WRONG, test_hidden)
