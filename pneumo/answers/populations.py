"""Whose answer a verdict is, and what each answer learnt from: the facts every entry point words its own way.

A result's `population` ("child" or "adult", pneumo/checks/scope.py) says whose answer the film got;
the MCP tool's disclaimer and description, the CLI's table and the archive summary name it from here,
so that an adult's verdict is never described with the children's training data.
"""

CHILD, ADULT = "child", "adult"  # the values of a result's `population` (pneumo.checks.scope)

# What each answer learnt from, completing "a statistical estimate for X-rays like ..." (ASCII: relayed by assistants).
LEARNT_FROM = {
    CHILD: "X-rays of children aged 1 to 5 at one hospital in Guangzhou",
    ADULT: "radiologist-read adult X-rays of one hospital, the NIH Clinical Center in Bethesda",
}
# The answer's name in running text: "the children's answer", "the adults' answer".
ANSWER_OF = {CHILD: "the children's answer", ADULT: "the adults' answer"}
