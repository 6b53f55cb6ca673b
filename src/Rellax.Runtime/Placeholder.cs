namespace Rellax.Runtime; internal static class Placeholder { }
