namespace Rellax.Tests; internal static class Placeholder { }
