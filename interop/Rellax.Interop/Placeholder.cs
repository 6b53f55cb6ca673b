namespace Rellax.Interop; internal static class Placeholder { }
